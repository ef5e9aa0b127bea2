"""Configuration: select / ignore / per-path-ignores in setup.cfg or pyproject.toml, CLI override, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmha_guard.cli import main
from lint_rules import audit_paths, load_config
from lint_rules.config import ConfigError
from lint_rules.engine import RuleSelection

GR001_BUG = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''
STRICT_ONLY = '''
class BarBackend:
    def init_forward_metadata(self, forward_batch):
        bs = forward_batch.batch_size
'''


def _project(root: Path, config_name: str, config_text: str) -> Path:
    (root / "pkg" / "legacy").mkdir(parents=True)
    (root / "pkg" / "foo_backend.py").write_text(GR001_BUG)
    (root / "pkg" / "legacy" / "old_backend.py").write_text(GR001_BUG)
    (root / "pkg" / "bar_backend.py").write_text(STRICT_ONLY)
    (root / config_name).write_text(config_text)
    return root


def _audit_json(root: Path, *extra: str, capsys) -> tuple[int, list[tuple[str, str]]]:
    code = main(["audit", "--format", "json", "--no-cache", *extra, str(root)])
    report = json.loads(capsys.readouterr().out)
    return code, [(f["rule"], f["path"]) for f in report["findings"]]


SETUP_CFG = """[fmha-guard]
select = GR001, GR101
per-path-ignores =
    pkg/legacy/*: GR001, GR101
    bar_backend.py: GR101
"""
PYPROJECT = """[tool.fmha-guard]
select = ["GR001", "forward-batch-size-in-backend"]
per-path-ignores = { "pkg/legacy/*" = ["GR001", "GR101"], "bar_backend.py" = "GR101" }
"""


@pytest.mark.parametrize("name, text", [("setup.cfg", SETUP_CFG), ("pyproject.toml", PYPROJECT)])
def test_select_and_per_path_ignores_from_either_file(tmp_path, capsys, name, text):
    root = _project(tmp_path, name, text)
    config = load_config(root)
    assert config.select == ("GR001", "GR101") or config.select == ("GR001", "forward-batch-size-in-backend")
    assert config.ignored_for("pkg/legacy/old_backend.py") == {"GR001", "GR101"}
    assert config.ignored_for("pkg/bar_backend.py") == {"GR101"}  # a glob without / matches the name
    code, found = _audit_json(root, capsys=capsys)
    # GR101 (strict, opt-in) is selected: it flags foo_backend's forward read as well;
    # legacy/ is ignored for both rules, bar_backend for GR101.
    assert code == 1
    assert found == [("GR001", "pkg/foo_backend.py"), ("GR101", "pkg/foo_backend.py")]


def test_cli_select_and_ignore_override_the_config(tmp_path, capsys):
    root = _project(tmp_path, "setup.cfg", SETUP_CFG)
    code, found = _audit_json(root, "--select", "GR101", capsys=capsys)
    assert found == [("GR101", "pkg/foo_backend.py")]  # config select replaced; per-path still applies
    code, found = _audit_json(root, "--ignore", "GR001", capsys=capsys)
    assert ("GR001", "pkg/foo_backend.py") not in found and ("GR101", "pkg/foo_backend.py") in found


def test_config_ignore_key(tmp_path, capsys):
    root = _project(tmp_path, "setup.cfg", "[fmha-guard]\nignore = GR001\n")
    code, found = _audit_json(root, capsys=capsys)
    assert code == 0 and found == []


@pytest.mark.parametrize(
    "name, text, message",
    [  # each message names the file (checked below), the section and the key
        ("setup.cfg", "[fmha-guard]\nselct = GR001\n", "[fmha-guard]: unknown key 'selct'"),
        ("pyproject.toml", '[tool.fmha-guard]\nper-path-ignore = {}\n', "[tool.fmha-guard]: unknown key 'per-path-ignore'"),
        ("setup.cfg", "[fmha-guard]\nper-path-ignores =\n    tests/* GR001\n", "[fmha-guard] per-path-ignores: expected 'GLOB: CODES'"),
        ("pyproject.toml", '[tool.fmha-guard]\nselect = 3\n', "[tool.fmha-guard] select: expected a list of names"),
        ("pyproject.toml", '[tool.fmha-guard]\nextra-kernel-calls = 3\n', "[tool.fmha-guard] extra-kernel-calls: expected"),
        ("pyproject.toml", '[tool.fmha-guard\n', "not valid TOML"),
        ("setup.cfg", "[fmha-guard\nselect = GR001\n", "not a valid INI file"),
        ("setup.cfg", "[fmha-guard]\nselect = GR777\n", "[fmha-guard] select: unknown rule 'GR777'"),
        ("setup.cfg", "[fmha-guard]\nignore = GR776\n", "[fmha-guard] ignore: unknown rule 'GR776'"),
        ("setup.cfg", "[fmha-guard]\nper-path-ignores =\n    tests/*: GR778\n", "[fmha-guard] per-path-ignores: unknown rule 'GR778'"),
    ],
)
def test_bad_config_is_a_clear_error_with_exit_2(tmp_path, capsys, name, text, message):
    root = _project(tmp_path, name, text)
    code = main(["audit", "--no-cache", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and f"{root / name}: {message}" in err and "Traceback" not in err
    if "GR77" not in message:
        with pytest.raises(ConfigError):
            load_config(root)


def test_known_keys_are_listed_in_the_error(tmp_path):
    (tmp_path / "setup.cfg").write_text("[fmha-guard]\nbogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    for key in ("select", "ignore", "per-path-ignores", "extra-kernel-calls", "extra-swap-points",
                "extra-forward-methods", "extra-immutable-pool-facts", "extra-decode-kernels"):
        assert key in str(info.value)


def test_extra_kernel_calls_still_extend_defaults(tmp_path):
    (tmp_path / "setup.cfg").write_text("[fmha-guard]\nextra-kernel-calls = my_paged_*\nselect = GR001\n")
    (tmp_path / "x_backend.py").write_text(GR001_BUG.replace("trtllm_batch_context_with_kv_cache", "my_paged_attention"))
    config = load_config(tmp_path)
    result = audit_paths([tmp_path], RuleSelection(config.select), config, jobs=1)
    assert [f.rule for f in result.findings] == ["GR001"]


def test_fix_and_diff_flags(tmp_path, capsys, repo_root):
    buggy = tmp_path / "padded_batch_size_buggy.py"
    buggy.write_text((repo_root / "examples" / "padded_batch_size_buggy.py").read_text())
    before = buggy.read_text()
    assert main(["audit", "--no-cache", "--diff", str(tmp_path)]) == 1
    diff = capsys.readouterr().out
    assert diff.startswith("--- a/padded_batch_size_buggy.py") and "cu_seqlens_q.shape[0] - 1" in diff
    assert buggy.read_text() == before  # --diff changes nothing
    assert main(["audit", "--no-cache", "--fix", "--diff", str(tmp_path)]) == 2
    assert "exclusive" in capsys.readouterr().err
    assert main(["audit", "--no-cache", "--fix", "--format", "json", str(tmp_path)]) == 0  # fixed, re-audited
    out = capsys.readouterr()
    assert "fixed 1 file" in out.err and json.loads(out.out)["findings"] == []
    assert "cu_seqlens_q.shape[0] - 1" in buggy.read_text()


DRAFT_EXTEND_ON_CUSTOM_KERNEL = '''
class FooBackend(AttentionBackend):
    def _prepare_spec(self, forward_batch):
        if forward_batch.forward_mode.is_draft_extend_v2():
            self.meta = self._draft_extend_metadata(forward_batch)

    def forward_extend(self, q, k, v, layer, forward_batch):
        if forward_batch.forward_mode.is_draft_extend_v2():
            return my_fixed_q_decode(query=q)
        return trtllm_batch_context_with_kv_cache(query=q)
'''


def test_extra_decode_kernels_and_planning_methods(tmp_path):
    (tmp_path / "foo_backend.py").write_text(DRAFT_EXTEND_ON_CUSTOM_KERNEL)

    def gr003(config_text: str) -> list[str]:
        (tmp_path / "setup.cfg").write_text("[fmha-guard]\nselect = GR003\n" + config_text)
        config = load_config(tmp_path)
        return [f.symbol for f in audit_paths([tmp_path], RuleSelection(config.select), config, jobs=1).findings]

    assert gr003("") == []  # not a decode kernel by default
    decode = "extra-decode-kernels = my_fixed_q_*\n"
    assert gr003(decode) == ["FooBackend.forward_extend"]  # _prepare_spec is no metadata method...
    assert gr003(decode + "extra-planning-methods = _prepare_*\n") == []  # ...unless configured so


# -- configuration resolved per file (issue 12) ------------------------------------------


def _findings(capsys, *args: str) -> list[tuple[str, str]]:
    code = main(["audit", "--format", "json", "--no-cache", *args])
    assert code in (0, 1), capsys.readouterr().err
    return sorted((f["file"], f["rule"]) for f in json.loads(capsys.readouterr().out)["findings"])


def test_lint_of_a_file_honours_the_config_beside_it(tmp_path, capsys, monkeypatch):
    # pre-commit runs `fmha-guard lint sub/x.py` from the repository root
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x_backend.py").write_text(GR001_BUG)
    (tmp_path / "y_backend.py").write_text(GR001_BUG)
    (tmp_path / "sub" / "setup.cfg").write_text("[fmha-guard]\nignore = GR001\n")
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "--no-cache", "sub/x_backend.py"]) == 0
    assert main(["lint", "--no-cache", "sub/x_backend.py", "y_backend.py"]) == 1
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["y_backend.py"]


def test_nearest_config_above_each_file_wins(tmp_path, capsys, monkeypatch):
    (tmp_path / "setup.cfg").write_text("[fmha-guard]\nselect = GR001, GR101\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pyproject.toml").write_text('[tool.fmha-guard]\nselect = ["GR001"]\n')
    (tmp_path / "x_backend.py").write_text(GR001_BUG)
    (tmp_path / "sub" / "x_backend.py").write_text(GR001_BUG)
    monkeypatch.chdir(tmp_path)
    expected = [("sub/x_backend.py", "GR001"), ("x_backend.py", "GR001"), ("x_backend.py", "GR101")]
    assert _findings(capsys, ".") == expected
    assert _findings(capsys, "--select", "GR101", ".") == [("sub/x_backend.py", "GR101"), ("x_backend.py", "GR101")]
    monkeypatch.chdir(tmp_path / "sub")  # the working directory changes nothing
    assert _findings(capsys, "..") == sorted(
        [(str(tmp_path / "x_backend.py"), "GR001"), (str(tmp_path / "x_backend.py"), "GR101"), ("x_backend.py", "GR001")]
    )


def test_per_path_globs_are_relative_to_their_config_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "sub" / "tests").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "sub" / "setup.cfg").write_text("[fmha-guard]\nper-path-ignores =\n    tests/*: GR001\n")
    for folder in ("sub/tests", "tests", "sub"):
        (tmp_path / folder / "x_backend.py").write_text(GR001_BUG)
    monkeypatch.chdir(tmp_path)
    expected = [("sub/x_backend.py", "GR001"), ("tests/x_backend.py", "GR001")]  # sub/tests/ ignored, tests/ not
    assert _findings(capsys, ".") == expected
    assert _findings(capsys, "sub", "tests") == expected  # whatever the audited root
    assert _findings(capsys, "sub/tests") == []
    assert _findings(capsys, "sub/tests/x_backend.py") == []  # a single file too


def test_config_flag_forces_one_file_for_every_path(tmp_path, capsys, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "setup.cfg").write_text("[fmha-guard]\nignore = GR001\n")  # not read with --config
    (tmp_path / "sub" / "x_backend.py").write_text(GR001_BUG)
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "fmha.toml").write_text('[tool.fmha-guard]\nselect = ["GR101"]\nper-path-ignores = {"sub/y*" = ["GR101"]}\n')
    (tmp_path / "sub" / "y_backend.py").write_text(GR001_BUG)
    monkeypatch.chdir(tmp_path)
    # the forced file's globs are relative to the working directory (ruff's --config)
    assert _findings(capsys, "--config", "ci/fmha.toml", ".") == [("sub/x_backend.py", "GR101")]
    (tmp_path / "ci" / "empty.cfg").write_text("[other]\nx = 1\n")
    assert main(["audit", "--no-cache", "--config", "ci/empty.cfg", "."]) == 2
    assert "ci/empty.cfg: no [fmha-guard] section" in capsys.readouterr().err
    assert main(["audit", "--no-cache", "--config", "ci/missing.toml", "."]) == 2
    assert "--config: no such file: ci/missing.toml" in capsys.readouterr().err


def test_configs_are_looked_up_once_per_directory(tmp_path, monkeypatch):
    from lint_rules import config as config_module

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "setup.cfg").write_text("[fmha-guard]\nignore = GR102\n")
    looked: list[Path] = []
    real = config_module._in_directory
    monkeypatch.setattr(config_module, "_in_directory", lambda folder: looked.append(folder) or real(folder))
    resolver = config_module.ConfigResolver()
    for name in ("x.py", "y.py", "z.py"):
        assert resolver.for_path(tmp_path / "a" / "b" / name).ignore == ("GR102",)
    assert resolver.for_path(tmp_path / "a" / "q.py").origin == str(tmp_path / "setup.cfg")
    assert looked == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
