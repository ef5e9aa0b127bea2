"""Hostile input never ends green, never loses findings, never writes outside the audited tree.

Each case is a tree, file or flag the issue found breaking the audit: it now gives a
per-file error (``path: error: message``, in every format, failing the run) or a
one-line usage error (exit 2), never a traceback, and the other files are still audited.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from fmha_guard.cli import main
from lint_rules import audit_paths, select_rules
from lint_rules.autofix import FixError, apply_fixes
from lint_rules.nesting import MAX_COST, MAX_DEPTH, MAX_ELIF_CHAIN, measure, nesting_problem

BUGGY = '''class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''
FIXABLE = '''class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        md = self.forward_metadata
        return trtllm_batch_context_with_kv_cache(
            query=q, batch_size=forward_batch.batch_size, cum_seq_lens_q=md.cu_seqlens_q
        )
'''
REPO = Path(__file__).resolve().parent.parent


def audit_json(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["audit", "--no-cache", "--output-format", "json", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else {}, out.err


def found(report: dict) -> list[tuple[str, str]]:
    return [(f["path"], f["rule"]) for f in report["findings"]]


def errors(report: dict) -> dict[str, str]:
    return {e["path"]: e["message"] for e in report["errors"]}


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fmha_guard", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# -- the tree walk -------------------------------------------------------------------


def test_a_symlink_loop_is_a_per_file_error_and_the_rest_is_audited(tmp_path, capsys):
    (tmp_path / "a_backend.py").write_text(BUGGY)
    os.symlink(".", tmp_path / "loop")  # the issue's `ln -s . loop`
    os.symlink("self", tmp_path / "self")  # a link to itself: ELOOP
    code, report, err = audit_json(capsys, str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert found(report) == [("a_backend.py", "GR001")]
    assert errors(report) == {
        "loop": "symlink loop: it points to '.', a directory that holds it",
        "self": "symlink loop",
    }


def test_a_fifo_is_reported_never_opened(tmp_path):
    (tmp_path / "a_backend.py").write_text(BUGGY)
    os.mkfifo(tmp_path / "x.py")
    walk = cli("audit", "--no-cache", "--output-format", "concise", ".", cwd=tmp_path, timeout=60)
    assert walk.returncode == 1, walk.stderr
    assert "x.py: error: not a regular file" in walk.stdout and "a_backend.py:3:" in walk.stdout
    for command in ("audit", "lint"):
        named = cli(command, "--no-cache", "x.py", cwd=tmp_path, timeout=60)
        assert named.returncode == 1 and "x.py: error: not a regular file" in named.stdout + named.stderr


def test_directory_symlinks_are_followed_once_and_a_dangling_one_is_an_error(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a_backend.py").write_text(BUGGY)
    (tmp_path / "sub").mkdir()
    os.symlink("pkg", tmp_path / "alias")  # sorts before pkg/: still reported as pkg/
    os.symlink("../pkg", tmp_path / "sub" / "pkg_link")
    os.symlink("pkg/a_backend.py", tmp_path / "b_link.py")  # a file already audited
    os.symlink("nowhere.py", tmp_path / "dangling.py")
    code, report, _ = audit_json(capsys, str(tmp_path))
    assert code == 1
    assert found(report) == [("pkg/a_backend.py", "GR001")]
    assert errors(report) == {"dangling.py": "dangling symlink to 'nowhere.py'"}
    assert report["files_scanned"] == 2


def test_a_file_named_on_the_command_line_is_linted_whatever_its_extension(tmp_path, capsys):
    (tmp_path / "serve").write_text("#!/usr/bin/env python\n" + BUGGY)  # pre-commit's types: [python]
    assert main(["lint", "--no-cache", str(tmp_path / "serve")]) == 1
    assert ": GR001 " in capsys.readouterr().out
    code, report, _ = audit_json(capsys, str(tmp_path))  # a directory walk keeps to .py files
    assert code == 0 and report["files_scanned"] == 0


# -- decoding and parsing ------------------------------------------------------------


def test_a_bom_or_a_coding_cookie_is_decoded_as_python_does(tmp_path, capsys):
    (tmp_path / "bom_backend.py").write_bytes(b"\xef\xbb\xbf" + BUGGY.encode())
    latin = "# -*- coding: latin-1 -*-\nNAME = 'café'\n" + BUGGY
    (tmp_path / "latin_backend.py").write_bytes(latin.encode("latin-1"))
    (tmp_path / "bad_cookie.py").write_bytes(b"# coding: no-such-codec\nx = 1\n")
    code, report, _ = audit_json(capsys, str(tmp_path))
    assert code == 1
    assert found(report) == [("bom_backend.py", "GR001"), ("latin_backend.py", "GR001")]
    assert [f["line"] for f in report["findings"]] == [3, 5]
    assert "bad encoding declaration" in errors(report)["bad_cookie.py"]


def test_python_312_syntax_keeps_its_findings_on_any_interpreter(tmp_path, capsys):
    (tmp_path / "new_backend.py").write_text(
        '''type Pages = list[int]


def first[T](xs: list[T]) -> T:
    return xs[0]


class FooBackend:
    def pick[T](self, x: T) -> T:
        return x

    def forward_extend(self, q, k, v, layer, forward_batch):
        tag = f"{q.shape["rows"]}"
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''
    )
    code, report, _ = audit_json(capsys, str(tmp_path))
    assert code == 1 and report["errors"] == []
    assert [(f["rule"], f["line"], f["col"], f["symbol"]) for f in report["findings"]] == [
        ("GR001", 14, 60, "FooBackend.forward_extend")
    ]


def test_a_file_that_does_not_parse_fails_the_run(tmp_path, capsys):
    # a file the rules would read (a file without their words is never parsed)
    (tmp_path / "broken_backend.py").write_text(BUGGY + "    def forward_decode(:\n")
    code, report, _ = audit_json(capsys, str(tmp_path))
    assert code == 1 and report["findings"] == [] and "cannot parse" in errors(report)["broken_backend.py"]
    assert main(["lint", "--no-cache", str(tmp_path / "broken_backend.py")]) == 1  # pre-commit: "Failed"
    assert f"{tmp_path / 'broken_backend.py'}: error: cannot parse" in capsys.readouterr().out
    assert main(["audit", "--no-cache", "--exit-zero", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["audit", "--no-cache", "--output-format", "sarif", str(tmp_path)]) == 1
    notes = json.loads(capsys.readouterr().out)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in notes] == ["broken_backend.py"]


def test_a_deeply_nested_expression_is_refused_before_the_parser_sees_it(tmp_path):
    deep = tmp_path / "deep_backend.py"
    deep.write_text(BUGGY + "x = " + "-" * 5000 + "1\n")  # 5 KB; libcst alone takes 1.4 GB
    (tmp_path / "ok_backend.py").write_text(BUGGY)
    probe = (
        "import json, resource, subprocess, sys\n"
        "run = subprocess.run([sys.executable, '-m', 'fmha_guard', 'audit', '--no-cache', '--jobs', '1',\n"
        "                      '--output-format', 'json', sys.argv[1]], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
        "print(json.dumps({'rc': run.returncode, 'out': run.stdout, 'err': run.stderr, 'peak_mb': peak}))\n"
    )
    run = json.loads(subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                                    timeout=120, check=True).stdout)
    assert run["rc"] == 1, run["err"]
    report = json.loads(run["out"])
    assert found(report) == [("ok_backend.py", "GR001")]
    assert errors(report) == {"deep_backend.py": f"expression nested 5000 deep (limit {MAX_DEPTH})"}
    assert run["peak_mb"] < 200, run["peak_mb"]


# -- the nesting measure -------------------------------------------------------------


@pytest.mark.parametrize(
    "source, depth",
    [
        ("x = " + "-" * 300 + "1\n", 300),
        ("x = " + "(" * 300 + "1" + ")" * 300 + "\n", 300),
        ("x = " + "lambda a, b=1: " * 300 + "1\n", 300),
        ("x = " + "not " * 300 + "1\n", 300),
        ("x = " + "**".join(["a"] * 301) + "\n", 300),
        # hidden from Python 3.11's tokenizer: replacement fields are code (PEP 701)
        ("x = f'{" + "(" * 300 + "1" + ")" * 300 + "}'\n", 302),
        ("x = f\"{x + \"a\" + " + "(" * 300 + "1" + ")" * 300 + "}\"\n", 302),
        ("x = " + 'f"{' * 150 + "1" + '}"' * 150 + "\n", 300),
        ('x = f"{a:\n' + "(" * 300 + "1" + ")" * 300 + "\n", 300),  # a format spec ends at a newline
    ],
)
def test_the_nesting_measure_sees_what_makes_the_parser_recurse(source, depth):
    assert measure(source).depth == depth
    assert nesting_problem(source) == f"expression nested {depth} deep (limit {MAX_DEPTH})"


@pytest.mark.parametrize(
    "source",
    [
        "x = " + " + ".join(["a"] * 2000) + "\n",  # left-associative chains are loops, not recursion
        "x = a" + ".b" * 2000 + "\n",
        "x = [" + ", ".join(["-1"] * 2000) + "]\n",
        'x = "' + "(" * 500 + '"\n',  # brackets inside strings and comments do not count
        "# " + "(" * 500 + "\n",
        "s = '''\n" + "-" * 500 + "\n'''\n",
        'x = f"{{" + "{{" * 300 + "}}"\n',
    ],
)
def test_flat_code_is_not_refused(source):
    assert nesting_problem(source) is None


def test_many_moderately_deep_lines_and_long_elif_chains_are_refused_too():
    line = "x = " + "f(" * 60 + ")" * 60 + "\n"  # 60 deep: each is fine, thousands are not
    assert nesting_problem(line) is None
    problem = nesting_problem(line * 200)
    assert problem is not None and f"(limit {MAX_COST};" in problem
    chain = "if a:\n    pass\n" + "elif a:\n    pass\n" * (MAX_ELIF_CHAIN + 1)
    assert nesting_problem(chain) == f"elif chain {MAX_ELIF_CHAIN + 1} long (limit {MAX_ELIF_CHAIN})"
    separate = ("if a:\n    pass\nelif b:\n    pass\n") * (MAX_ELIF_CHAIN + 1)
    assert nesting_problem(separate) is None


def test_real_backends_are_far_below_the_limits():
    for path in sorted((REPO / "examples").rglob("*.py")) + sorted((REPO / "lint_rules").glob("*.py")):
        found_ = measure(path.read_text())
        assert found_.depth < MAX_DEPTH // 4 and found_.cost < MAX_COST // 20, path


# -- archives ------------------------------------------------------------------------


def test_a_bad_archive_is_a_per_file_error_naming_it(tmp_path, capsys):
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
    (tmp_path / "ok_backend.py").write_text(BUGGY)
    code, report, err = audit_json(
        capsys, str(tmp_path / "bad.whl"), str(tmp_path / "bad.tar.gz"), str(tmp_path / "ok_backend.py")
    )
    assert code == 1 and "Traceback" not in err
    assert found(report) == [(str(tmp_path / "ok_backend.py"), "GR001")]
    messages = errors(report)
    assert messages[str(tmp_path / "bad.whl")].startswith("not a readable zip archive (BadZipFile: ")
    assert messages[str(tmp_path / "bad.tar.gz")].startswith("not a readable tar archive (ReadError: ")
    assert all("\n" not in m for m in messages.values())


def _evil_archives(tmp_path: Path) -> list[Path]:
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("../escape_backend.py", FIXABLE)
        archive.writestr("/abs/escape_backend.py", FIXABLE)
        archive.writestr("evil/good_backend.py", FIXABLE)
    sdist = tmp_path / "evil-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name in ("evil-1.0/../../escape_backend.py", "evil-1.0/evil/good_backend.py"):
            info = tarfile.TarInfo(name)
            info.size = len(FIXABLE.encode())
            archive.addfile(info, io.BytesIO(FIXABLE.encode()))
    return [wheel, sdist]


def test_archive_member_names_are_never_resolved_and_fix_refuses_archives(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    for archive in _evil_archives(work):
        code, report, _ = audit_json(capsys, str(archive))
        assert code == 1
        assert [p for p, _ in found(report)] == [
            "evil/good_backend.py" if archive.suffix == ".whl" else "evil-1.0/evil/good_backend.py"
        ]
        assert all("archive member not audited: its name is" in m for m in errors(report).values())
        assert len(report["errors"]) == (2 if archive.suffix == ".whl" else 1)
        for flag in ("--fix", "--diff"):
            assert main(["audit", "--no-cache", flag, str(archive)]) == 2
            assert "cannot fix inside a wheel/sdist" in capsys.readouterr().err
        # even the library call, handed the archive's result and a directory, writes nothing
        result = audit_paths([archive], select_rules(), jobs=1)
        assert apply_fixes(result, work, write=True) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["work", "evil-1.0-py3-none-any.whl", "evil-1.0.tar.gz"]
    )


# -- --since -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_since_refuses_a_ref_git_would_read_as_an_option(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=n", "commit", "-q", "--allow-empty", "-m", "0"],
                   cwd=tmp_path, check=True)
    (tmp_path / "a_backend.py").write_text(BUGGY)
    for ref in ("--output=PWNED", "-p", "HEAD --output=PWNED", "no-such-ref"):
        run = cli("audit", "--no-cache", f"--since={ref}", ".", cwd=tmp_path)
        assert run.returncode == 2, (ref, run.stderr)
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("fmha-guard: error: --since ")
    assert not (tmp_path / "PWNED").exists()
    assert cli("audit", "--no-cache", "--since", "HEAD", ".", cwd=tmp_path).returncode == 1  # untracked: audited


# -- baselines -----------------------------------------------------------------------


def test_a_mistyped_baseline_is_an_error_never_a_new_file(tmp_path, capsys):
    (tmp_path / "a_backend.py").write_text(BUGGY)
    typo = tmp_path / "no_such_dir" / "baseline.json"
    assert main(["audit", "--no-cache", "--baseline", str(typo), str(tmp_path)]) == 2
    assert f"{typo}: no such baseline file; write one with --write-baseline" in capsys.readouterr().err
    assert main(["audit", "--no-cache", "--write-baseline", str(typo), str(tmp_path)]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not typo.parent.exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"version": 1, "findings": [}', "invalid JSON at line 1 column 29"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"version": 1, "findings": [{"rule": "GR001", "path": "a.py", "symbol": "C.f", "count": 1}]}',
         "findings[0] has no 'line_hash'"),
        ('{"version": 1, "findings": [{"rule": "GR001", "path": "a.py", "symbol": "C.f", "line_hash": "0", '
         '"count": "1"}]}', "findings[0].count must be a int, not '1'"),
        ('{"version": 2, "findings": []}', "unsupported baseline version 2"),
    ],
)
def test_a_corrupt_baseline_names_the_file_and_what_is_wrong(tmp_path, capsys, content, problem):
    (tmp_path / "a_backend.py").write_text(BUGGY)
    baseline = tmp_path / "b.json"
    baseline.write_text(content)
    assert main(["audit", "--no-cache", "--baseline", str(baseline), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{baseline}: " in err and problem in err and "Traceback" not in err


# -- --fix ---------------------------------------------------------------------------


def _fixable_tree(root: Path) -> list[Path]:
    root.mkdir()
    files = [root / f"{name}_backend.py" for name in ("a", "b", "c")]
    for file in files:
        file.write_text(FIXABLE)
    return files


def test_fix_checks_every_file_first_and_writes_none_if_one_is_read_only(tmp_path, capsys):
    files = _fixable_tree(tmp_path / "src")
    files[1].chmod(0o444)
    before = {f: f.read_bytes() for f in files}
    try:
        assert main(["audit", "--no-cache", "--fix", str(tmp_path / "src")]) == 2
        err = capsys.readouterr().err
        assert "b_backend.py: read-only" in err and err.count("\n") == 1
        assert {f: f.read_bytes() for f in files} == before
        assert not [p for p in (tmp_path / "src").iterdir() if p.name.startswith(".tmp-")]
    finally:
        files[1].chmod(0o644)
    files[0].chmod(0o750)
    assert main(["audit", "--no-cache", "--fix", str(tmp_path / "src")]) == 0
    assert all(b"batch_size=md.cu_seqlens_q.shape[0] - 1," in f.read_bytes() for f in files)
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o750  # the file's mode is kept


def test_fix_refuses_a_file_changed_since_it_was_read(tmp_path, monkeypatch):
    files = _fixable_tree(tmp_path / "src")
    result = audit_paths([tmp_path / "src"], select_rules(), jobs=1)
    import lint_rules.autofix as autofix

    real_fix = autofix.fix_source

    def fix_then_edit(source, findings, config=None):
        files[2].write_text(FIXABLE + "# edited meanwhile\n")
        return real_fix(source, findings, config)

    monkeypatch.setattr(autofix, "fix_source", fix_then_edit)
    with pytest.raises(FixError, match="c_backend.py: changed since it was read"):
        apply_fixes(result, tmp_path / "src", write=True)
    assert files[0].read_text() == FIXABLE and files[1].read_text() == FIXABLE


def test_fix_never_writes_through_a_symlink_that_leaves_the_tree(tmp_path, capsys):
    outside = tmp_path / "outside_backend.py"
    outside.write_text(FIXABLE)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "in_backend.py").write_text(FIXABLE)
    os.symlink(outside, tmp_path / "src" / "linked_backend.py")
    assert main(["audit", "--no-cache", "--fix", str(tmp_path / "src")]) == 2
    assert "linked_backend.py: reached through a symlink that leaves the audited directory" in capsys.readouterr().err
    assert outside.read_text() == FIXABLE and (tmp_path / "src" / "in_backend.py").read_text() == FIXABLE


# -- the output pipe -----------------------------------------------------------------


def test_a_broken_pipe_keeps_the_exit_status_of_the_findings(tmp_path):
    (tmp_path / "a_backend.py").write_text(BUGGY)
    for fmt in ("json", "concise", "full"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fmha_guard", "audit", "--no-cache", "--output-format", fmt, "."],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        proc.stdout.close()  # the reader is gone before the first write (`| head -c0`)
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 1, err
        assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipeError" not in err
