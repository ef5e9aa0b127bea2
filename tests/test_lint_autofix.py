"""GR001 autofix: ``batch_size=<padded>`` -> ``<cum_seq_lens_q>.shape[0] - 1`` (libcst, verified by re-lint)."""

from __future__ import annotations

import difflib
import re
import textwrap
import zipfile
from pathlib import Path

import libcst as cst
import pytest

from lint_rules import audit_paths, audit_sources, select_rules
from lint_rules.autofix import apply_fixes, fix_source
from lint_rules.sources import SourceText

from .conftest import REPO, published_wheel

EXAMPLES = REPO / "examples"
TRTLLM_MHA = "sglang/srt/layers/attention/trtllm_mha_backend.py"
#: The line SGLang #21649 landed in 0.5.10.
LINE_21649 = "batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1,"


def _findings(source: str, path: str = "backend.py"):
    return audit_sources([SourceText(path, source)], select_rules(), jobs=1).findings


def _gr001(source: str):
    return [f for f in _findings(source) if f.rule == "GR001"]


def _fix(source: str) -> str:
    return fix_source(source, _findings(source))


def _kernel_call(source: str, name: str = "trtllm_batch_context_with_kv_cache") -> str:
    """The kernel call's code without comments or blank space."""
    calls = []

    class _Find(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            if isinstance(func, cst.Attribute) and func.attr.value == name:
                calls.append(call)

    module = cst.parse_module(source)
    module.visit(_Find())
    (call,) = calls
    code = module.code_for_node(call)
    return re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", code))


def test_fixes_the_example_to_the_fixed_forms_kernel_call():
    buggy = (EXAMPLES / "padded_batch_size_buggy.py").read_text()
    fixed = (EXAMPLES / "padded_batch_size_fixed.py").read_text()
    out = _fix(buggy)
    assert _gr001(buggy) and _gr001(out) == []
    # the fixed example reads the metadata through a local alias `metadata = self.forward_metadata`
    expected = _kernel_call(fixed).replace("metadata.", "self.forward_metadata.")
    assert _kernel_call(out) == expected
    # exactly one line changed, its trailing comment kept
    changed = [(a, b) for a, b in zip(buggy.splitlines(), out.splitlines()) if a != b]
    assert changed == [
        (
            "            batch_size=forward_batch.batch_size,  # BUG: padded to 12, metadata holds 10",
            "            batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1,"
            "  # BUG: padded to 12, metadata holds 10",
        )
    ]
    assert len(out.splitlines()) == len(buggy.splitlines())


@pytest.mark.network
def test_fixes_sglang_0_5_9_to_the_line_21649_landed():
    with zipfile.ZipFile(published_wheel("sglang", "0.5.9")) as wheel:
        source = wheel.read(TRTLLM_MHA).decode()
    findings = audit_sources([SourceText(TRTLLM_MHA, source)], select_rules(), jobs=1).findings
    (bug,) = [f for f in findings if f.rule == "GR001" and f.symbol == "TRTLLMHAAttnBackend.forward_extend"]
    out = fix_source(source, findings)
    diff = [
        line
        for line in difflib.unified_diff(source.splitlines(), out.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert [(d[0], d[1:].strip()) for d in diff] == [("-", "batch_size=forward_batch.batch_size,"), ("+", LINE_21649)]
    assert out.splitlines()[bug.line - 1].strip() == LINE_21649
    with zipfile.ZipFile(published_wheel("sglang", "0.5.10")) as wheel:  # indentation too
        assert out.splitlines()[bug.line - 1] in wheel.read(TRTLLM_MHA).decode().splitlines()
    after = audit_sources([SourceText(TRTLLM_MHA, out)], select_rules(["GR001"]), jobs=1).findings
    assert not [f for f in after if f.symbol == "TRTLLMHAAttnBackend.forward_extend"]


def test_through_an_alias_and_a_multiline_value_with_comments_kept():
    source = textwrap.dedent(
        """\
        class FooBackend(AttentionBackend):
            def forward_extend(self, q, k, v, layer, forward_batch):
                bs = forward_batch.batch_size
                return trtllm_batch_context_with_kv_cache(
                    query=q,  # the queries
                    batch_size=(
                        bs
                    ),  # padded
                    cum_seq_lens_q=self.meta[layer.layer_id].cu_seqlens_q,
                )
        """
    )
    out = _fix(source)
    assert _gr001(out) == []
    assert "batch_size=self.meta[layer.layer_id].cu_seqlens_q.shape[0] - 1,  # padded\n" in out
    assert "query=q,  # the queries\n" in out
    assert fix_source(out, _findings(out)) == out  # idempotent


def test_a_non_primary_offsets_expression_is_parenthesized():
    source = textwrap.dedent(
        """\
        class FooBackend(AttentionBackend):
            def forward_extend(self, q, k, v, layer, forward_batch):
                return trtllm_ragged_attention_deepseek(
                    query=q,
                    batch_size=forward_batch.batch_size,
                    cum_seq_lens_q=self.a if self.use_a else self.b,
                )
        """
    )
    out = _fix(source)
    assert "batch_size=(self.a if self.use_a else self.b).shape[0] - 1," in out
    assert _gr001(out) == []


@pytest.mark.parametrize(
    "source",
    [
        # no cum_seq_lens_q in the call: nothing to take the size from
        """\
        class FooBackend(AttentionBackend):
            def forward_decode(self, q, k, v, layer, forward_batch):
                return trtllm_batch_decode_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
        """,
        # another argument is padded too: fixing batch_size alone would not clear the call
        """\
        class FooBackend(AttentionBackend):
            def forward_extend(self, q, k, v, layer, forward_batch):
                bs = forward_batch.batch_size
                return trtllm_batch_context_with_kv_cache(
                    query=q[:bs], batch_size=bs, cum_seq_lens_q=self.forward_metadata.cu_seqlens_q
                )
        """,
        # the offsets are themselves sliced by the padded size
        """\
        class FooBackend(AttentionBackend):
            def forward_extend(self, q, k, v, layer, forward_batch):
                bs = forward_batch.batch_size
                return trtllm_batch_context_with_kv_cache(
                    query=q, batch_size=bs, cum_seq_lens_q=self.cu[: bs + 1]
                )
        """,
        # the finding is on another argument; batch_size is clean and stays as written
        """\
        class FooBackend(AttentionBackend):
            def forward_extend(self, q, k, v, layer, forward_batch):
                out = torch.empty(forward_batch.batch_size, 8)
                return trtllm_batch_context_with_kv_cache(
                    query=q, out=out, batch_size=self.n, cum_seq_lens_q=self.cu
                )
        """,
    ],
)
def test_left_alone(source):
    source = textwrap.dedent(source)
    assert _gr001(source), "the case must be a GR001 finding"
    assert _fix(source) == source


def test_only_gr001_findings_drive_fixes():
    buggy = (EXAMPLES / "padded_batch_size_buggy.py").read_text()
    others = [f for f in _findings(buggy) if f.rule != "GR001"]
    assert fix_source(buggy, others) == buggy
    assert fix_source(buggy, []) == buggy


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    for name in ("padded_batch_size_buggy.py", "padded_batch_size_fixed.py", "stale_swa_pool_buggy.py"):
        (root / "pkg" / name).write_bytes((EXAMPLES / name).read_bytes())
    crlf = (EXAMPLES / "padded_batch_size_buggy.py").read_text().replace("\n", "\r\n")
    (root / "pkg" / "crlf_backend.py").write_bytes(crlf.encode())
    return root


def test_apply_fixes_diff_only_then_write(tmp_path):
    root = _tree(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*.py")}
    result = audit_paths([root], select_rules(), jobs=1)
    diffs = apply_fixes(result, root, write=False)
    assert {p: p.read_bytes() for p in root.rglob("*.py")} == before  # --diff writes nothing
    assert [d.splitlines()[0] for d in diffs] == [
        "--- a/pkg/crlf_backend.py",
        "--- a/pkg/padded_batch_size_buggy.py",
    ]
    assert all(d.splitlines()[1].startswith("+++ b/pkg/") for d in diffs)
    assert all("+            batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1," in d for d in diffs)

    assert apply_fixes(result, root, write=True) == diffs
    crlf = (root / "pkg" / "crlf_backend.py").read_bytes()
    assert b"\r\n" in crlf and b"\n" not in crlf.replace(b"\r\n", b"")  # line endings kept
    again = audit_paths([root], select_rules(), jobs=1)
    assert [f.rule for f in again.findings] == ["GR002", "GR002"]  # GR002 is never auto-fixed
    assert apply_fixes(again, root, write=True) == []
    # untouched files are byte-identical
    for name in ("padded_batch_size_fixed.py", "stale_swa_pool_buggy.py"):
        assert (root / "pkg" / name).read_bytes() == before[root / "pkg" / name]


def test_apply_fixes_never_touches_an_archive(tmp_path):
    wheel = tmp_path / "demo-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/backend.py", (EXAMPLES / "padded_batch_size_buggy.py").read_text())
    data = wheel.read_bytes()
    result = audit_paths([wheel], select_rules(), jobs=1)
    assert [f.rule for f in result.findings] == ["GR001"]
    assert apply_fixes(result, wheel, write=True) == []
    assert wheel.read_bytes() == data
    # a stale result (the file is gone) is skipped, not an error
    assert apply_fixes(result, tmp_path, write=True) == []
