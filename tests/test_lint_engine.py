"""The engine: archives read in place, pre-filter, parse errors, parallel == serial, config."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from lint_rules import LintConfig, audit_paths, load_config, select_rules
from lint_rules.config import ConfigError

BUGGY = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_directory_audit_is_sorted_relative_and_skips_unrelated_files(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/b_backend.py": BUGGY,
            "pkg/a_backend.py": BUGGY,
            "pkg/unrelated.py": "x = 1\n",
            "pkg/__pycache__/junk.py": BUGGY,
        },
    )
    result = audit_paths([root], select_rules(), jobs=1)
    assert result.files_scanned == 3
    assert result.files_parsed == 2  # unrelated.py never parsed: no rule's words in it
    assert [f.path for f in result.findings] == ["pkg/a_backend.py", "pkg/b_backend.py"]
    assert all(f.symbol == "FooBackend.forward_extend" for f in result.findings)


def test_parse_error_is_reported_for_that_file_and_the_run_goes_on(tmp_path):
    root = _tree(tmp_path, {"bad_backend.py": "class FooBackend:\n    def forward_batch(:\n        batch_size\n", "ok_backend.py": BUGGY})
    result = audit_paths([root], select_rules(), jobs=1)
    assert [e.path for e in result.errors] == ["bad_backend.py"]
    assert "cannot parse" in result.errors[0].message
    assert [f.path for f in result.findings] == ["ok_backend.py"]


def test_wheel_and_sdist_are_read_in_place(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/attention/foo_backend.py", BUGGY)
        archive.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
    sdist = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        data = BUGGY.encode()
        info = tarfile.TarInfo("demo-1.0/demo/attention/foo_backend.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    for target, path in ((wheel, "demo/attention/foo_backend.py"), (sdist, "demo-1.0/demo/attention/foo_backend.py")):
        result = audit_paths([target], select_rules(), jobs=1)
        assert [f.path for f in result.findings] == [path]
    assert not (tmp_path / "demo").exists()  # nothing extracted


def test_parallel_and_serial_runs_agree(tmp_path):
    files = {f"m{i:02d}_backend.py": BUGGY if i % 3 else "class X:\n    batch_size = 1  # forward_batch\n" for i in range(40)}
    root = _tree(tmp_path, files)
    serial = audit_paths([root], select_rules(), jobs=1)
    parallel = audit_paths([root], select_rules(), jobs=2)
    assert parallel.findings == serial.findings and len(serial.findings) == 26


def test_strict_rules_are_opt_in(tmp_path):
    root = _tree(tmp_path, {"foo_backend.py": "class FooBackend:\n    def init_forward_metadata(self, forward_batch):\n        bs = forward_batch.batch_size\n"})
    assert audit_paths([root], select_rules(), jobs=1).findings == []
    strict = audit_paths([root], select_rules(["GR101"]), jobs=1).findings
    assert [(f.rule, f.line) for f in strict] == [("GR101", 3)]
    assert select_rules(["gr101"], ["forward-batch-size-in-backend"]) == []


def test_config_from_setup_cfg_and_pyproject(tmp_path):
    (tmp_path / "setup.cfg").write_text("[fmha-guard]\nextra-kernel-calls = my_kernel, _go_*\n")
    config = load_config(tmp_path)
    assert config.is_kernel_call("my_kernel") and config.is_kernel_call("_go_fast")
    assert config.is_kernel_call("trtllm_batch_decode_with_kv_cache")  # defaults kept
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[tool.fmha-guard]\nextra-immutable-pool-facts = ["kv_cache_dim2"]\n')
    assert load_config(sub).is_immutable_pool_fact("kv_cache_dim2")
    (sub / "pyproject.toml").write_text('[tool.fmha-guard]\nkernels = ["x"]\n')
    with pytest.raises(ConfigError, match="unknown key 'kernels'"):
        load_config(sub)
    (sub / "pyproject.toml").unlink()
    assert load_config(sub / "foo_backend.py") == LintConfig.extended(kernel_calls=["my_kernel", "_go_*"])


def test_positions_are_exact_in_nested_decorated_and_async_methods(tmp_path):
    source = '''import os

if os.environ.get("X"):
    class Outer:
        class InnerBackend(AttentionBackend):
            @torch.no_grad()
            async def forward_decode(self, q, k, v, layer, forward_batch):
                # comment
                out = trtllm_batch_decode_with_kv_cache(
                    query=q,  batch_size=forward_batch.batch_size,
                )
                return out

            def __init__(self, model_runner):
                self.a = 1; self.swa = isinstance(model_runner.token_to_kv_pool, SWAKVPool)
'''
    root = _tree(tmp_path, {"nested_backend.py": source})
    result = audit_paths([root], select_rules(), jobs=1)
    lines = source.splitlines()
    got = {(f.rule, f.symbol): (f.line, f.col) for f in result.findings}
    assert got == {
        ("GR001", "InnerBackend.forward_decode"): (10, lines[9].index("batch_size=") + 1),
        ("GR002", "InnerBackend.__init__"): (15, lines[14].index("self.swa") + 1),
    }
