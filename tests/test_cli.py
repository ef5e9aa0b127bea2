"""The ``fmha-guard`` command as a user runs it (installed console script, subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_BUGGY = {"padded_batch_size_buggy.py": "GR001", "stale_swa_pool_buggy.py": "GR002"}
# examples/seed_bugs/: runnable scripts whose buggy backend subclasses reproduce the four
# SGLang fixes on purpose; the audit walks subfolders, so it reports them too (one each).
SEED_BUGS = {
    "seed_bugs/pr21649_padded_batch_size.py": "GR001",
    "seed_bugs/pr24856_draft_extend_on_decode_kernel.py": "GR003",
    "seed_bugs/pr21987_graph_replay_layout.py": "GR004",
    "seed_bugs/pr26966_stale_swa_pool.py": "GR002",
}


def fmha_guard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("fmha-guard")
    assert exe, "the fmha-guard console script is not installed (pip install -e .)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


JSON_FINDING_KEYS = {"rule", "name", "path", "line", "col", "symbol", "message"}
# added by issue 12: whether --fix fixes it, the rule's evidence, the path to open
JSON_FINDING_KEYS_NEW = {"fixable", "evidence", "file"}


def test_audit_of_examples_reports_exactly_the_buggy_examples(repo_root):
    run = fmha_guard("audit", "--format", "json", "examples", cwd=repo_root)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert set(report) == {"files_scanned", "findings", "errors"}
    assert report["files_scanned"] == len(list((repo_root / "examples").rglob("*.py")))
    assert report["errors"] == []
    flagged = {(f["path"], f["rule"]) for f in report["findings"]}
    assert flagged == set(EXAMPLES_BUGGY.items()) | set(SEED_BUGS.items())
    for f in report["findings"]:
        assert set(f) == JSON_FINDING_KEYS | JSON_FINDING_KEYS_NEW
        assert "." in f["symbol"] and f["line"] > 0 and f["col"] > 0
        assert f["file"] == f"examples/{f['path']}"  # relative to the current directory
        assert f["fixable"] == (f["rule"] == "GR001")


def test_audit_without_path_audits_the_current_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x_backend.py").write_text(
        (Path(__file__).parent.parent / "examples" / "padded_batch_size_buggy.py").read_text()
    )
    run = fmha_guard("audit", "--format", "json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert [(f["file"], f["rule"]) for f in json.loads(run.stdout)["findings"]] == [("sub/x_backend.py", "GR001")]


def test_audit_examples_works_from_any_directory(tmp_path):
    run = fmha_guard("audit", "--examples", "--format", "json", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    found = sorted((Path(f["file"]).name, f["rule"]) for f in json.loads(run.stdout)["findings"])
    assert found == [("padded_batch_size_buggy.py", "GR001"), ("stale_swa_pool_buggy.py", "GR002"),
                     ("stale_swa_pool_buggy.py", "GR002")]
    for f in json.loads(run.stdout)["findings"]:
        assert Path(f["file"]).is_absolute() and Path(f["file"]).is_file()  # outside the cwd: absolute
    assert list(tmp_path.iterdir()) == []  # no cache written into the user's directory
    text = fmha_guard("audit", "--examples", cwd=tmp_path)
    assert text.returncode == 1 and "padded_batch_size_buggy.py:46:13: GR001 [*] " in text.stdout
    clash = fmha_guard("audit", "--examples", "src", cwd=tmp_path)
    assert clash.returncode == 2 and "--examples" in clash.stderr


def test_text_report_is_ruff_shaped_with_summary_last(repo_root):
    run = fmha_guard("audit", "--no-cache", "examples", cwd=repo_root)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    first = lines[0]
    assert first.startswith("examples/padded_batch_size_buggy.py:46:13: GR001 [*] DP-padded `forward_batch.batch_size`")
    assert first.endswith("(e.g. `cu_seqlens_q.shape[0] - 1`).") and len(first) > 200  # never wrapped when piped
    assert "46 | batch_size=forward_batch.batch_size,  # BUG: padded to 12, metadata holds 10" in lines
    for evidence in ("= in PaddedBatchTRTLLMBackend.forward_extend", "= padded size (line 46): forward_batch.batch_size",
                     "= argument (line 46): batch_size=forward_batch.batch_size",
                     "= kernel (line 36): trtllm_batch_context_with_kv_cache()"):
        assert f"   {evidence}" in lines, evidence
    assert lines[-2] == "Found 7 findings (GR001: 2, GR002: 3, GR003: 1, GR004: 1); 10 files scanned, 8 parsed."
    assert lines[-1] == "[*] 2 fixable with --fix."
    assert "\x1b[" not in run.stdout  # no color codes in a pipe


def test_exit_status_clean_and_usage_error(repo_root, tmp_path):
    fixed = repo_root / "examples" / "padded_batch_size_fixed.py"
    assert fmha_guard("audit", str(fixed), cwd=tmp_path).returncode == 0
    missing = fmha_guard("audit", "no/such/dir", cwd=tmp_path)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    unknown = fmha_guard("audit", "--select", "GR999", str(fixed), cwd=tmp_path)
    assert unknown.returncode == 2 and "GR999" in unknown.stderr and "GR001" in unknown.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr


def test_lint_prints_one_precommit_line_per_finding(repo_root):
    run = fmha_guard("lint", "examples/padded_batch_size_buggy.py", "examples/padded_batch_size_fixed.py", cwd=repo_root)
    assert run.returncode == 1
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    path, line, col, rest = lines[0].split(":", 3)
    assert path == "examples/padded_batch_size_buggy.py" and int(line) > 0 and int(col) > 0
    assert rest.startswith(" GR001 [*] DP-padded")  # ruff's fixable marker


def test_rules_and_explain(repo_root):
    rules = fmha_guard("rules", cwd=repo_root)
    assert rules.returncode == 0
    for code in ("GR001", "GR002", "GR101", "GR102"):
        assert code in rules.stdout
    explain = fmha_guard("explain", "GR001", cwd=repo_root)
    assert explain.returncode == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "#21649"):
        assert heading in explain.stdout
    by_name = fmha_guard("explain", "stale-kv-pool-state", cwd=repo_root)
    assert by_name.stdout.startswith("GR002 stale-kv-pool-state")
    pseudo = fmha_guard("explain", "gr901", cwd=repo_root)
    assert pseudo.stdout.startswith("GR901 invalid-suppression\n\n") and "## Use instead" in pseudo.stdout


@pytest.mark.parametrize("invariant", ["batch-size", "page-id-range", "graph-replay-layout"])
def test_explain_an_invariant(repo_root, invariant):
    run = fmha_guard("explain", invariant, cwd=repo_root)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(invariant) and "Fix:" in run.stdout and "Source:" in run.stdout
    module = f"guardrails.invariants.{invariant.replace('-', '_')}"
    assert f"Defined in: {module}" in run.stdout
    listing = fmha_guard("invariants", cwd=repo_root)
    assert invariant in listing.stdout


def test_python_m_fmha_guard_is_the_command(repo_root):
    run = subprocess.run([sys.executable, "-m", "fmha_guard", "explain", "GR004"], cwd=repo_root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("GR004 cuda-graph-replay-layout"), run.stderr


def test_audit_runs_without_torch(repo_root):
    # A pre-commit virtualenv has no torch: linting must never import it.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['flashinfer'] = None\n"
        "from fmha_guard.cli import main\n"
        "rc = main(['audit', '--format', 'json', 'examples'])\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "sys.exit(rc)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert len(json.loads(run.stdout)["findings"]) == 3 + len(SEED_BUGS)
