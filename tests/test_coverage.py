"""``fmha-guard coverage``: the FMHA call sites of a codebase and whether the guard checks them.

Small fixture codebases exercise each way a call is resolved (imports, kept kernels,
wrapper objects, method names, helpers) and the "checked" rules (aliases, ``forward`` ->
``run``, engine interfaces); the network tests read SGLang 0.5.23's and vLLM 0.33.0's
published wheels in place, compare the import-resolved call sites with an independent
count, spot-check known sites and print the percentage.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmha_guard.call_sites import scan
from fmha_guard.cli import main
from fmha_guard.coverage_command import coverage_of
from fmha_guard.fmha_kernels import guarded_keys, kernel_of, method_checked
from runtime_checks.kernel_specs import ENTRY_POINTS


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def sites_by_line(target: Path, include=()) -> dict[tuple[str, int], object]:
    return {(Path(s.path).name, s.line): s for s in scan(target, include).sites}


def keys(site) -> list[str]:
    return [k.key for k in site.kernels]


@dataclass(frozen=True)
class Entry:
    module: str
    qualname: str
    aliases: tuple[str, ...] = ()


# ----------------------------------------------------------------- resolving calls


IMPORTS = """\
import flashinfer
import flashinfer.decode
import flashinfer as fi
from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel
from sgl_kernel.flash_attn import flash_attn_with_kvcache
from flashinfer.cascade import merge_state

def forward(q):
    flashinfer.decode.trtllm_batch_decode_with_kv_cache(q)          # line 9
    fi.trtllm_batch_decode_with_kv_cache_mla(q)                      # line 10
    context_kernel(q)                                                # line 11
    flash_attn_with_kvcache(q)                                       # line 12
    merge_state(q)                                                   # line 13: no FMHA kernel

def local_import(q):
    from flash_mla import flash_mla_with_kvcache as mla
    return mla(q)                                                    # line 17

def shadowed(flash_attn_with_kvcache):
    return flash_attn_with_kvcache(1)                                # line 20: a parameter

def rebound(q):
    context_kernel = print
    return context_kernel(q)                                         # line 24: a local

class Backend:
    from flashinfer.xqa import xqa                                   # a class body is no scope for methods
    def run(self, q):
        return xqa(q)                                                # line 29
"""


def test_module_qualified_functions_and_import_aliases(tmp_path):
    found = sites_by_line(write(tmp_path / "pkg", {"backend.py": IMPORTS}))
    assert keys(found["backend.py", 9]) == ["flashinfer:trtllm_batch_decode_with_kv_cache"]
    assert keys(found["backend.py", 10]) == ["flashinfer:trtllm_batch_decode_with_kv_cache_mla"]
    assert found["backend.py", 11].target == "flashinfer.prefill.trtllm_batch_context_with_kv_cache"
    assert keys(found["backend.py", 12]) == ["sgl_kernel:flash_attn_with_kvcache"]
    assert keys(found["backend.py", 17]) == ["flash_mla:flash_mla_with_kvcache"]
    assert {line for _, line in found} == {9, 10, 11, 12, 17}  # 13, 20, 24, 29: not FMHA calls
    assert all(s.resolution == "import" for s in found.values())
    assert found["backend.py", 9].symbol == "forward" and found["backend.py", 9].col == 5


KEPT = """\
import functools
from sgl_kernel.flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

class Backend:
    def __init__(self, ver):
        if ver == 3:
            from sgl_kernel.flash_attn import flash_attn_with_kvcache as fa
        else:
            from .fa4 import flash_attn_with_kvcache as fa
        self.fa = fa
        self.varlen = functools.partial(flash_attn_varlen_func, causal=True)

    def forward(self, q):
        kernel = flash_attn_with_kvcache if q else None
        kernel(q)                                                    # line 15
        self.varlen(q)                                               # line 16
        return self.fa(q)                                            # line 17
"""


def test_kernels_kept_in_attributes_and_locals(tmp_path):
    root = write(tmp_path / "pkg", {"__init__.py": "", "backend.py": KEPT, "fa4.py": "def flash_attn_with_kvcache(q): ..."})
    found = sites_by_line(root, ["backend.py"])
    assert keys(found["backend.py", 15]) == ["sgl_kernel:flash_attn_with_kvcache"]
    assert keys(found["backend.py", 16]) == ["sgl_kernel:flash_attn_varlen_func"]
    assert keys(found["backend.py", 17]) == ["sgl_kernel:flash_attn_with_kvcache"]  # pkg.fa4's is no kernel
    assert {s.resolution for s in found.values()} == {"attribute"}


WRAPPERS = """\
from dataclasses import dataclass
from typing import List, Optional
from flashinfer import BatchDecodeWithPagedKVCacheWrapper, BatchPrefillWithPagedKVCacheWrapper
from flashinfer.prefill import BatchPrefillWithRaggedKVCacheWrapper

@dataclass
class DecodeMetadata:
    decode_wrappers: List[BatchDecodeWithPagedKVCacheWrapper]

class Backend:
    def __init__(self):
        self.prefill_wrapper_ragged = BatchPrefillWithRaggedKVCacheWrapper(None)
        self.prefill_wrappers_paged = [BatchPrefillWithPagedKVCacheWrapper(None) for _ in range(2)]
        self.extra = []
        self.extra.append(BatchDecodeWithPagedKVCacheWrapper(None))
        self.forward_metadata = DecodeMetadata([])

    def forward_extend(self, q):
        self.prefill_wrapper_ragged.forward_return_lse(q)            # line 19
        paged = self.prefill_wrappers_paged[0]
        paged.forward(q)                                             # line 21
        for wrapper in self.extra:
            wrapper.begin_forward(q)                                 # line 23
        self.forward_metadata.decode_wrappers[0].run(q)              # line 24

    def plan(self, wrappers: Optional[List[BatchDecodeWithPagedKVCacheWrapper]], unknown):
        for i, w in enumerate(wrappers):
            w.plan(i)                                                # line 28
        unknown.begin_forward(1)                                     # line 29: by method name
        unknown.run(1)                                               # line 30: generic name, no 'wrapper'
        self.decode_wrapper.run(1)                                   # line 31: 'wrapper', by method name
"""


def test_wrapper_methods_resolved_from_where_the_object_was_made(tmp_path):
    found = sites_by_line(write(tmp_path / "pkg", {"backend.py": WRAPPERS}))
    assert keys(found["backend.py", 19]) == ["flashinfer:BatchPrefillWithRaggedKVCacheWrapper.forward_return_lse"]
    assert keys(found["backend.py", 21]) == ["flashinfer:BatchPrefillWithPagedKVCacheWrapper.forward"]
    assert keys(found["backend.py", 23]) == ["flashinfer:BatchDecodeWithPagedKVCacheWrapper.begin_forward"]
    assert keys(found["backend.py", 24]) == ["flashinfer:BatchDecodeWithPagedKVCacheWrapper.run"]
    assert keys(found["backend.py", 28]) == ["flashinfer:BatchDecodeWithPagedKVCacheWrapper.plan"]
    assert {found["backend.py", n].resolution for n in (19, 21, 23, 24, 28)} == {"constructor"}
    # unknown classes: begin_forward on anything, run only on a 'wrapper', narrowed by its words
    assert found["backend.py", 29].resolution == "method name"
    assert set(keys(found["backend.py", 29])) == {
        "flashinfer:BatchDecodeWithPagedKVCacheWrapper.begin_forward",
        "flashinfer:BatchPrefillWithPagedKVCacheWrapper.begin_forward",
        "flashinfer:BatchPrefillWithRaggedKVCacheWrapper.begin_forward"}  # the classes this code makes
    assert ("backend.py", 30) not in found
    assert keys(found["backend.py", 31]) == ["flashinfer:BatchDecodeWithPagedKVCacheWrapper.run"]


HELPERS = {
    "__init__.py": "",
    "utils/__init__.py": "",
    "utils/kernels.py": """\
        import functools, importlib

        def _lazy_import_wrapper(module, attr):
            return lambda *a, **k: getattr(importlib.import_module(module), attr)(*a, **k)

        flashinfer_xqa = _lazy_import_wrapper("flashinfer.decode", "xqa_batch_decode_with_kv_cache")
        not_attention = _lazy_import_wrapper("flashinfer", "mm_fp4")

        def decode_helper(q):
            from flashinfer.decode import trtllm_batch_decode_with_kv_cache
            return trtllm_batch_decode_with_kv_cache(q)

        def unrelated(q):
            return q
    """,
    "ops/fa_utils.py": """\
        import sys
        if sys.platform == "linux":
            from vllm.vllm_flash_attn import flash_attn_varlen_func
        else:
            def flash_attn_varlen_func(*args):
                raise ImportError
    """,
    "backends/attn.py": """\
        from pkg.utils.kernels import flashinfer_xqa, decode_helper, unrelated, not_attention
        from ..ops.fa_utils import flash_attn_varlen_func

        def forward(q):
            flashinfer_xqa(q)                  # line 5
            decode_helper(q)                   # line 6
            unrelated(q)                       # line 7
            not_attention(q)                   # line 8
            flash_attn_varlen_func(q)          # line 9
    """,
}


def test_helpers_of_the_audited_codebase_one_level_deep(tmp_path):
    root = write(tmp_path / "pkg", HELPERS)
    found = sites_by_line(root, ["backends/"])
    assert keys(found["attn.py", 5]) == ["flashinfer:xqa_batch_decode_with_kv_cache"]
    assert found["attn.py", 5].via == ("flashinfer.decode.xqa_batch_decode_with_kv_cache",)
    assert keys(found["attn.py", 6]) == ["flashinfer:trtllm_batch_decode_with_kv_cache"]
    assert keys(found["attn.py", 9]) == ["vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func"]
    assert {line for _, line in found} == {5, 6, 9} and {s.resolution for s in found.values()} == {"helper"}
    # the helper's own call is a call site too when its file is listed
    assert ("kernels.py", 11) in sites_by_line(root)


def test_a_wheel_is_read_in_place(tmp_path):
    wheel = tmp_path / "engine-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("engine/__init__.py", "")
        archive.writestr("engine/layers/attention/backend.py", IMPORTS)  # namespace dirs below the package
        archive.writestr("engine/other.py", IMPORTS)
    result = scan(wheel, ["engine/layers/attention/"])
    assert result.files_scanned == 1 and len(result.sites) == 5
    assert {s.path for s in result.sites} == {"engine/layers/attention/backend.py"}


# ----------------------------------------------------------------- what is checked


def test_checked_from_the_entry_points():
    guarded = guarded_keys([Entry("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.run", ("run_return_lse",)),
                            Entry("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.plan"),
                            Entry("flashinfer.decode", "trtllm_batch_decode_with_kv_cache")])
    assert guarded["flashinfer:trtllm_batch_decode_with_kv_cache"] == "flashinfer.decode.trtllm_batch_decode_with_kv_cache"
    decode = "BatchDecodeWithPagedKVCacheWrapper"
    assert method_checked(decode, "forward", guarded)  # forward calls self.run
    assert method_checked(decode, "forward_return_lse", guarded)
    assert method_checked(decode, "run_return_lse", guarded)  # an alias the entry point lists
    assert method_checked(decode, "begin_forward", guarded) is None  # begin_forward = plan: not listed
    assert method_checked("CUDAGraphBatchDecodeWithPagedKVCacheWrapper", "run", guarded)  # inherited
    assert method_checked("BatchPrefillWithPagedKVCacheWrapper", "run", guarded) is None
    assert kernel_of("flashinfer.trtllm_batch_decode_with_kv_cache").key == "flashinfer:trtllm_batch_decode_with_kv_cache"
    assert kernel_of("flashinfer.cascade.merge_state") is None


def test_coverage_of_sites_with_reasons(tmp_path):
    root = write(tmp_path / "pkg", {"backend.py": WRAPPERS})
    entries = [Entry("flashinfer.prefill", "BatchPrefillWithRaggedKVCacheWrapper.run", ("run_return_lse",)),
               Entry("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.plan", ("begin_forward",))]
    result = coverage_of(scan(root), entries)
    by_line = {s.site.line: s for s in result.sites}
    assert by_line[19].checked and by_line[19].checked_by == ("flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper.run",)
    assert by_line[23].checked and by_line[28].checked
    assert not by_line[21].checked and "BatchPrefillWithPagedKVCacheWrapper.forward" in by_line[21].reason
    assert not by_line[29].checked and by_line[29].reason.startswith("matched by method name")
    assert result.summary() == f"{result.checked} of {len(result.sites)} FMHA call sites checked ({result.percent:.1f}%)"


def test_an_engine_interface_is_checked_through_what_its_body_calls(tmp_path):
    interface = "sglang/kernels/ops/attention/flash_mla_interface.py"
    root = write(tmp_path, {
        "sglang/__init__.py": "",
        interface: """\
            import flash_mla
            def flash_mla_with_kvcache(q):
                return flash_mla.flash_mla_with_kvcache(q)
            def flash_mla_sparse_fwd(q):
                return _private(q)
        """,
        "sglang/srt/backend.py": """\
            from sglang.kernels.ops.attention.flash_mla_interface import flash_mla_with_kvcache, flash_mla_sparse_fwd
            def forward(q):
                flash_mla_with_kvcache(q)
                flash_mla_sparse_fwd(q)
        """,
    })
    result = coverage_of(scan(root, ["sglang/srt/"]), [Entry("flash_mla.flash_mla_interface", "flash_mla_with_kvcache")])
    first, second = result.sites
    assert first.checked and first.checked_by == ("flash_mla.flash_mla_interface.flash_mla_with_kvcache",)
    assert not second.checked and "reaches no known kernel" in second.reason


# ----------------------------------------------------------------- the command


def test_command_text_json_and_fail_under(tmp_path, capsys):
    root = write(tmp_path / "pkg", {"backend.py": IMPORTS})
    assert main(["coverage", str(root)]) == 0
    text = capsys.readouterr().out
    assert "backend.py:9:5: flashinfer.decode.trtllm_batch_decode_with_kv_cache" in text
    assert text.rstrip().splitlines()[-1].endswith("FMHA call sites checked (" + text.rsplit("(", 1)[1].strip())
    assert main(["coverage", str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["call_sites"] == 5 and len(data["call_sites"]) == 5
    assert {"path", "line", "col", "symbol", "callee", "target", "resolution", "kernels", "checked", "checked_by",
            "reason", "via"} <= set(data["call_sites"][0])
    unchecked = [s for s in data["call_sites"] if not s["checked"]]
    assert data["summary"]["checked"] == 5 - len(unchecked)
    assert main(["coverage", str(root), "--fail-under", "100"]) == (1 if unchecked else 0)
    assert main(["coverage", str(root), "--fail-under", "0"]) == 0
    capsys.readouterr()
    assert main(["coverage", str(tmp_path / "missing")]) == 2
    assert main(["coverage", str(root), "--fail-under", "120"]) == 2


def test_computing_coverage_imports_neither_torch_nor_flashinfer(tmp_path, repo_root):
    root = write(tmp_path / "pkg", {"backend.py": IMPORTS})
    code = ("import sys; from fmha_guard.cli import main; rc = main(['coverage', sys.argv[1], '--format', 'json']); "
            "bad = [m for m in ('torch', 'flashinfer', 'libcst') if m in sys.modules]; "
            "print('LOADED', bad); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], cwd=repo_root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


# ----------------------------------------------------------------- published engines (network)


def _flat_import_sites(wheel: Path, prefix: str) -> set[tuple[str, int, int]]:
    """An independent count: every call whose root name some import of the file (any scope,
    no shadowing rules) binds to a dotted name of an FMHA kernel function."""
    found = set()
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not (name.startswith(prefix) and name.endswith(".py")):
                continue
            tree = ast.parse(archive.read(name))
            package = name.rsplit("/", 1)[0].replace("/", ".")
            binds: dict[str, set[str]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for a in node.names:
                        binds.setdefault(a.asname or a.name.split(".")[0], set()).add(
                            a.name if a.asname else a.name.split(".")[0])
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        parts = package.split(".")
                        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                    for a in node.names:
                        binds.setdefault(a.asname or a.name, set()).add(f"{base}.{a.name}")
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func, attrs = node.func, []
                while isinstance(func, ast.Attribute):
                    attrs.insert(0, func.attr)
                    func = func.value
                if isinstance(func, ast.Name):
                    for dotted in binds.get(func.id, ()):
                        kernel = kernel_of(".".join([dotted, *attrs]))
                        if kernel is not None and not kernel.wrapper:
                            found.add((name, node.lineno, node.col_offset + 1))
    return found


def _line_of(wheel: Path, member: str, needle: str) -> int:
    text = zipfile.ZipFile(wheel).read(member).decode()
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


ENGINES = {
    "sglang": ("0.5.23", "sglang/srt/layers/attention/"),
    "vllm": ("0.33.0", "vllm/v1/attention/backends/"),
}


@pytest.fixture(scope="module")
def engine_coverage(request):
    from .conftest import published_wheel

    out = {}
    for package, (version, prefix) in ENGINES.items():
        wheel = published_wheel(package, version)
        out[package] = (wheel, coverage_of(scan(wheel, [prefix]), ENTRY_POINTS, [prefix]))
    return out


@pytest.mark.network
@pytest.mark.parametrize("package", sorted(ENGINES))
def test_engine_call_sites_match_an_independent_count(engine_coverage, package):
    wheel, result = engine_coverage[package]
    prefix = ENGINES[package][1]
    imported = {(s.site.path, s.site.line, s.site.col) for s in result.sites if s.site.resolution == "import"}
    assert imported == _flat_import_sites(wheel, prefix)
    assert all(s.site.path.startswith(prefix) for s in result.sites) and not result.errors
    print(f"\n{package} {ENGINES[package][0]} {prefix}: {result.summary()}; by resolution: "
          + ", ".join(f"{r} {sum(s.site.resolution == r for s in result.sites)}"
                      for r in ("import", "attribute", "constructor", "method name", "helper")))


@pytest.mark.network
def test_known_sglang_sites(engine_coverage):
    wheel, result = engine_coverage["sglang"]
    sites = {(s.site.path.rsplit("/", 1)[-1], s.site.line): s for s in result.sites}
    trtllm = "sglang/srt/layers/attention/trtllm_mha_backend.py"
    fmha_v2 = sites["trtllm_mha_backend.py", _line_of(wheel, trtllm, "flashinfer.prefill.trtllm_fmha_v2_prefill(")]
    assert [k.key for k in fmha_v2.site.kernels] == ["flashinfer:trtllm_fmha_v2_prefill"]
    assert fmha_v2.site.symbol == "TRTLLMHAAttnBackend.forward_extend"
    backend = "sglang/srt/layers/attention/flashinfer_backend.py"
    lse = sites["flashinfer_backend.py", _line_of(wheel, backend, "o2, s2 = prefill_wrapper_paged.forward_return_lse(")]
    assert [k.key for k in lse.site.kernels] == ["flashinfer:BatchPrefillWithPagedKVCacheWrapper.forward_return_lse"]
    assert lse.site.resolution == "constructor"
    begin = [s for s in result.sites if s.site.path == backend and s.site.callee == "wrapper.begin_forward"]
    assert len(begin) == 2 and all(k.key == "flashinfer:BatchDecodeWithPagedKVCacheWrapper.begin_forward"
                                   for s in begin for k in s.site.kernels)


@pytest.mark.network
def test_known_vllm_sites(engine_coverage):
    wheel, result = engine_coverage["vllm"]
    member = "vllm/v1/attention/backends/flashinfer.py"
    xqa = next(s for s in result.sites if s.site.path == member and s.site.callee == "flashinfer_xqa_batch_decode_with_kv_cache")
    assert xqa.site.resolution == "helper" and xqa.site.via == ("flashinfer.decode.xqa_batch_decode_with_kv_cache",)
    fa = [s for s in result.sites if s.site.path == "vllm/v1/attention/backends/flash_attn.py"
          and s.site.callee == "flash_attn_varlen_func"]
    assert fa and all(k.key == "vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func"
                      for s in fa for k in s.site.kernels)


@pytest.mark.network
@pytest.mark.parametrize("package", sorted(ENGINES))
def test_sites_of_guarded_kernels_are_checked_and_the_rest_listed_unchecked(engine_coverage, package):
    _, result = engine_coverage[package]
    guarded = guarded_keys(ENTRY_POINTS)
    direct = [s for s in result.sites if s.site.resolution in ("import", "attribute", "constructor", "helper")
              and all(k.key in guarded or (k.wrapper and method_checked(k.name, k.method, guarded))
                      for k in s.site.kernels)]
    assert direct and all(s.checked for s in direct)
    for s in result.sites:  # unchecked ones say why, and which of their kernels no entry point patches
        if not s.checked:
            assert s.reason and any(entry is None for _, entry in s.per_kernel)
    unguarded = sorted({k.key for s in result.sites if not s.checked for k in s.site.kernels})
    print(f"\n{package}: {result.summary()}; not checked: {', '.join(unguarded) or '-'}")
