"""The audit report as CI reads it: ruff-shaped text, paths to open, every output format,
``--output-file`` / ``--statistics`` / ``-q`` / ``--exit-zero`` / ``--version``, and the
progress bar (only on a terminal)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

import guardrails
from fmha_guard import console as consoles
from fmha_guard.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUGGY = (EXAMPLES / "padded_batch_size_buggy.py").read_text()
ALIAS_CHAIN = '''
class FooBackend(AttentionBackend):
    def forward_decode(self, q, k, v, layer, forward_batch):
        bs = forward_batch.batch_size
        num_rows = bs * self.q_len_per_req
        return trtllm_batch_decode_with_kv_cache(query=q[:num_rows])
'''
PSEUDO = '''
def helper():
    return 1  # fmha-guard: ignore
'''
LOCATION = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>GR\d{3}) (?P<fix>\[\*\] )?(?P<msg>.+)$")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """``pkg/`` with the GR001 example and an alias chain; the current directory."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "padded_backend.py").write_text(BUGGY)
    (tmp_path / "pkg" / "chain_backend.py").write_text(ALIAS_CHAIN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "--no-cache", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_full_format_lines_evidence_and_summary_last(project, capsys):
    code, out, _ = _run(capsys, "pkg")
    assert code == 1
    lines = out.splitlines()
    heads = [m.groupdict() for m in map(LOCATION.match, lines) if m]
    assert [(h["path"], h["line"], h["code"], bool(h["fix"])) for h in heads] == [
        ("pkg/chain_backend.py", "6", "GR001", False),
        ("pkg/padded_backend.py", "46", "GR001", True),  # the call passes cum_seq_lens_q: --fix rewrites it
    ]
    # where the padded size comes from, through which names, into which argument of which kernel
    chain = lines[lines.index(LOCATION.match(lines[0]).string) + 1 :][:8]
    assert chain == [
        "  |",
        "6 | return trtllm_batch_decode_with_kv_cache(query=q[:num_rows])",
        "  |",
        "  = in FooBackend.forward_decode",
        "  = padded size (line 4): bs = forward_batch.batch_size",
        "  = derived (line 5): num_rows = bs * self.q_len_per_req",
        "  = argument (line 6): query=q[:num_rows]",
        "  = kernel (line 6): trtllm_batch_decode_with_kv_cache()",
    ]
    assert lines[-2:] == ["Found 2 findings (GR001: 2); 2 files scanned, 2 parsed.", "[*] 1 fixable with --fix."]


def test_text_is_never_hard_wrapped(project, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # rich reads it for a console that is not a terminal
    _, out, _ = _run(capsys, "pkg")
    (head,) = [line for line in out.splitlines() if line.startswith("pkg/padded_backend.py:46:13: GR001 [*] ")]
    assert head.endswith("(e.g. `cu_seqlens_q.shape[0] - 1`).")


def test_concise_and_quiet(project, capsys):
    code, out, err = _run(capsys, "--output-format", "concise", "-q", "pkg")
    assert code == 1 and err == ""
    assert [LOCATION.match(line)["path"] for line in out.splitlines()] == ["pkg/chain_backend.py", "pkg/padded_backend.py"]
    _, out, _ = _run(capsys, "--output-format", "concise", "pkg")
    assert out.splitlines()[-1] == "[*] 1 fixable with --fix."


def test_paths_are_relative_to_the_current_directory_or_absolute(project, capsys, monkeypatch):
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    _, out, _ = _run(capsys, "--output-format", "json", "../pkg")
    report = json.loads(out)
    assert {f["path"] for f in report["findings"]} == {"chain_backend.py", "padded_backend.py"}  # relative to the root
    assert {f["file"] for f in report["findings"]} == {
        str(project / "pkg" / "chain_backend.py"), str(project / "pkg" / "padded_backend.py")
    }  # outside the current directory: absolute, openable
    monkeypatch.chdir(project)
    _, out, _ = _run(capsys, "--output-format", "concise", "-q", str(project / "pkg"))
    assert out.startswith("pkg/chain_backend.py:6:")  # an absolute argument inside the cwd is shown relative


def test_two_wheels_are_told_apart(project, capsys):
    for name in ("a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"):
        with zipfile.ZipFile(project / name, "w") as wheel:
            wheel.writestr("pkg/padded_backend.py", BUGGY)
    _, out, _ = _run(capsys, "--output-format", "concise", "-q", "a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl")
    assert [LOCATION.match(line)["path"] for line in out.splitlines()] == [
        "a-1.0-py3-none-any.whl!pkg/padded_backend.py",
        "b-1.0-py3-none-any.whl!pkg/padded_backend.py",
    ]
    _, out, _ = _run(capsys, "--output-format", "gitlab", "a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl")
    issues = json.loads(out)
    assert len({i["fingerprint"] for i in issues}) == 2


def test_output_file_is_written_atomically_with_the_summary_on_stderr(project, capsys):
    code, out, err = _run(capsys, "--output-file", "reports/fmha.txt", "pkg")
    assert code == 1 and out == ""
    written = (project / "reports" / "fmha.txt").read_text()
    assert written.startswith("pkg/chain_backend.py:6:50: GR001 ") and "= kernel (line 6)" in written
    assert "Found 2 findings" not in written and "\x1b[" not in written
    assert err.splitlines() == ["Found 2 findings (GR001: 2); 2 files scanned, 2 parsed.", "[*] 1 fixable with --fix."]
    assert sorted(p.name for p in (project / "reports").iterdir()) == ["fmha.txt"]  # no temporary file left
    code, out, err = _run(capsys, "--output-format", "json", "-o", "reports/fmha.json", "-q", "pkg")
    assert out == err == "" and len(json.loads((project / "reports" / "fmha.json").read_text())["findings"]) == 2


def test_statistics(project, capsys):
    (project / "pkg" / "pseudo_backend.py").write_text(PSEUDO)
    code, out, _ = _run(capsys, "--statistics", "pkg")
    assert code == 1
    assert out.splitlines() == ["2\tGR001\t[*] padded-batch-size-in-kernel-call", "1\tGR901\t[ ] invalid-suppression"]
    _, out, _ = _run(capsys, "--statistics", "--output-format", "json", "pkg")
    assert json.loads(out)[0] == {"code": "GR001", "name": "padded-batch-size-in-kernel-call", "count": 2, "fixable": True}
    code, _, err = _run(capsys, "--statistics", "--output-format", "sarif", "pkg")
    assert code == 2 and "--statistics" in err


def test_exit_zero(project, capsys):
    (project / "pkg" / "broken_backend.py").write_text(BUGGY + "\ndef (:\n")
    code, out, _ = _run(capsys, "--exit-zero", "pkg")
    assert code == 0 and "Found 2 findings" in out and "1 file could not be linted." in out  # findings and errors
    assert main(["lint", "--no-cache", "--exit-zero", "pkg/padded_backend.py"]) == 0
    assert "GR001" in capsys.readouterr().out
    code, _, err = _run(capsys, "--exit-zero", "no/such/dir")
    assert code == 2 and "no such file" in err  # a usage error still fails


def test_json_keeps_its_keys_and_adds_evidence(project, capsys):
    _, out, _ = _run(capsys, "--format", "json", "pkg")  # the old spelling still works
    report = json.loads(out)
    chain = next(f for f in report["findings"] if f["path"] == "chain_backend.py")
    assert chain["fixable"] is False and chain["file"] == "pkg/chain_backend.py"
    assert [e["label"] for e in chain["evidence"]] == ["padded size", "derived", "argument", "kernel"]
    assert chain["evidence"][0] == {"label": "padded size", "line": 4, "code": "bs = forward_batch.batch_size"}


def test_github_workflow_commands(project, capsys):
    (project / "pkg" / "pseudo_backend.py").write_text(PSEUDO)
    (project / "pkg" / "broken_backend.py").write_text(BUGGY + "\ndef (:\n")
    _, out, _ = _run(capsys, "--output-format", "github", "pkg")
    lines = out.splitlines()
    assert lines[1].startswith("::error file=pkg/padded_backend.py,line=46,col=13,title=GR001::DP-padded ")
    assert lines[2].startswith("::warning file=pkg/pseudo_backend.py,line=3,col=") and ",title=GR901::" in lines[2]
    assert lines[3].startswith("::error file=pkg/broken_backend.py,title=fmha-guard::cannot parse")
    assert all(re.fullmatch(r"::(error|warning) [^:]+::.+", line) for line in lines)  # one command per line


def test_github_escapes_what_the_runner_would_read_as_syntax():
    from fmha_guard.formats.github import _data, _prop

    assert _data("50% done\nnext") == "50%25 done%0Anext"
    assert _prop("a:b,c") == "a%3Ab%2Cc"


def test_gitlab_code_quality(project, capsys):
    _, out, _ = _run(capsys, "--output-format", "gitlab", "pkg")
    issues = json.loads(out)
    assert [set(i) for i in issues] == [{"description", "check_name", "fingerprint", "severity", "location"}] * 2
    padded = next(i for i in issues if i["location"]["path"] == "pkg/padded_backend.py")
    assert padded["check_name"] == "GR001" and padded["severity"] == "major"
    assert padded["location"]["lines"] == {"begin": 46}
    (project / "pkg" / "padded_backend.py").write_text("import os\n\n" + BUGGY)  # code moves: same fingerprint
    _, moved, _ = _run(capsys, "--output-format", "gitlab", "pkg")
    assert {i["fingerprint"] for i in json.loads(moved)} == {i["fingerprint"] for i in issues}


def test_junit_parses_and_counts(project, capsys):
    (project / "pkg" / "broken_backend.py").write_text(BUGGY + "\ndef (:\n")
    _, out, _ = _run(capsys, "--output-format", "junit", "pkg")
    root = ET.fromstring(out)
    assert root.tag == "testsuites" and (root.get("failures"), root.get("errors")) == ("2", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"pkg/chain_backend.py", "pkg/padded_backend.py", "pkg/broken_backend.py"}
    (case,) = suites["pkg/padded_backend.py"].iter("testcase")
    assert case.get("line") == "46" and case.find("failure").get("type") == "GR001"
    (project / "pkg" / "broken_backend.py").unlink()
    for name in ("chain_backend.py", "padded_backend.py"):
        (project / "pkg" / name).write_text("x = 1\n")
    code, out, _ = _run(capsys, "--output-format", "junit", "pkg")
    assert code == 0 and ET.fromstring(out).find("testsuite/testcase").get("name") == "no findings"


def test_version(tmp_path):
    exe = shutil.which("fmha-guard")
    run = subprocess.run([exe, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == f"fmha-guard {guardrails.__version__}\n"


def _many(project: Path, n: int) -> None:
    for i in range(n):
        (project / "pkg" / f"copy{i}_backend.py").write_text(BUGGY)


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a terminal: a rich console forced to be one, writing into a buffer."""
    buffer = io.StringIO()
    monkeypatch.setattr(consoles, "stderr_terminal", lambda: consoles.console(buffer, force_terminal=True, width=100))
    return buffer


def test_progress_bar_on_a_terminal_only(project, capsys, terminal):
    _many(project, 10)
    assert main(["audit", "--no-cache", "--jobs", "1", "pkg"]) == 1
    assert "fmha-guard: linting" in terminal.getvalue() and "12/12" in terminal.getvalue()
    assert "linting" not in capsys.readouterr().err  # the bar draws on the terminal console only
    terminal.seek(0), terminal.truncate()
    assert main(["audit", "--no-cache", "-q", "pkg"]) == 1
    assert terminal.getvalue() == ""  # never with -q


def test_no_progress_bar_for_a_handful_of_files(project, capsys, terminal):
    assert main(["audit", "--no-cache", "pkg"]) == 1
    assert terminal.getvalue() == ""


def test_no_progress_bar_when_stderr_is_piped(project, capsys):
    from fmha_guard.progress import progress_for

    _many(project, 10)
    assert consoles.stderr_terminal() is None and progress_for(quiet=False) is None  # pytest captures stderr
    assert main(["audit", "--no-cache", "pkg"]) == 1
    assert "linting" not in capsys.readouterr().err


def test_fully_cached_json_audit_still_imports_no_rich(project):
    cache = project / "cache"
    code = (
        "import sys; from fmha_guard.cli import main; "
        f"main(['audit', '--format', 'json', '--cache-dir', {str(cache)!r}, 'pkg']); "
        f"rc = main(['audit', '--format', 'json', '-q', '--cache-dir', {str(cache)!r}, 'pkg']); "
        "print([m for m in ('libcst', 'rich', 'pydantic') if m in sys.modules], file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "['libcst']"  # the first (cold) run parsed; rich never loaded


def test_gr002_evidence_names_the_pool_read_and_the_cache(project, capsys):
    (project / "pkg" / "swa_backend.py").write_text('''
class FooBackend(AttentionBackend):
    def __init__(self, model_runner):
        pool = model_runner.token_to_kv_pool
        self.swa_pool = pool if isinstance(pool, SWAKVPool) else None
''')
    _, out, _ = _run(capsys, "--output-format", "json", "--select", "GR002", "pkg")
    (finding,) = json.loads(out)["findings"]
    assert finding["line"] == 5 and finding["evidence"] == [
        {"label": "pool read", "line": 4, "code": "pool = model_runner.token_to_kv_pool"},
        {"label": "cached as", "line": 5, "code": "self.swa_pool = pool if isinstance(pool, SWAKVPool) else None"},
    ]


def test_evidence_survives_the_result_cache(project, capsys):
    first = main(["audit", "--format", "json", "pkg"])
    cold = capsys.readouterr().out
    assert main(["audit", "--format", "json", "pkg"]) == first == 1
    warm = capsys.readouterr().out
    assert warm == cold and '"fixable": true' in warm and '"label": "derived"' in warm
