"""The content-hash result cache and ``--since GITREF``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from fmha_guard.cli import main
from lint_rules import LintConfig, audit_paths
from lint_rules.engine import RuleSelection
from lint_rules.result_cache import RACY_NS

BUGGY = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''


def _age(path, seconds=10):
    """Make the file look older than the racy window, as an unchanged file would be."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def _tree(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"m{i}_backend.py").write_text(BUGGY)
        _age(root / f"m{i}_backend.py")
    (root / "plain.py").write_text("x = 1\n")
    _age(root / "plain.py")
    return root


def test_unchanged_files_come_from_the_cache_and_results_agree(tmp_path):
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache"
    cold = audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    assert cold.cache_hits == 0 and cold.files_parsed == 3 and len(cold.findings) == 3
    warm = audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    assert warm.cache_hits == 4 and warm.findings == cold.findings and warm.lines == cold.lines
    assert warm.files_parsed == cold.files_parsed and warm.files_scanned == 4


def test_a_content_change_invalidates_only_that_file(tmp_path):
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache"
    audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    (root / "m1_backend.py").write_text(BUGGY.replace("batch_size=forward_batch.batch_size", "batch_size=1"))
    again = audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    assert again.cache_hits == 3 and [f.path for f in again.findings] == ["m0_backend.py", "m2_backend.py"]
    # same content, new mtime (touched, checked out again): a hit by content hash
    (root / "m0_backend.py").write_text(BUGGY)
    touched = audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    assert touched.cache_hits == 4


def test_an_edit_within_the_same_clock_tick_is_not_missed(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    file = root / "m_backend.py"
    file.write_text(BUGGY)  # fresh mtime: inside the racy window, so not trusted by stat
    cache = tmp_path / "cache"
    audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    st = os.stat(file)
    file.write_text(BUGGY.replace("forward_batch.batch_size", "forward_batch.batch_sizE"))  # same size
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))  # and same mtime
    assert time.time_ns() - st.st_mtime_ns < RACY_NS
    result = audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    assert result.findings == [] and result.cache_hits == 0


def test_config_or_rule_selection_change_invalidates(tmp_path):
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache"
    audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    other_rules = audit_paths([root], RuleSelection(["GR001", "GR101"]), jobs=1, cache_dir=cache)
    assert other_rules.cache_hits == 0 and {f.rule for f in other_rules.findings} == {"GR001", "GR101"}
    config = LintConfig(per_path_ignores=(("m0_*", ("GR001",)),))
    other_config = audit_paths([root], RuleSelection(), config, jobs=1, cache_dir=cache)
    assert other_config.cache_hits == 0 and len(other_config.findings) == 2
    assert audit_paths([root], RuleSelection(), config, jobs=1, cache_dir=cache).cache_hits == 4


def test_cli_cache_location_no_cache_and_parallel_writers(tmp_path, capsys):
    root = _tree(tmp_path / "src", n=30)
    assert main(["audit", "--format", "json", str(root)]) == 1
    first = json.loads(capsys.readouterr().out)
    assert list((root / ".cache" / "fmha-guard").glob("*/*.json"))  # under the audited root
    assert main(["audit", "--format", "json", str(root)]) == 1
    assert json.loads(capsys.readouterr().out) == first
    shutil.rmtree(root / ".cache")
    assert main(["audit", "--no-cache", "--format", "json", str(root)]) == 1
    capsys.readouterr()
    assert not (root / ".cache").exists()
    # concurrent processes sharing a cache directory: no torn file, same answers
    cache = tmp_path / "shared"
    cmd = [sys.executable, "-m", "fmha_guard", "audit", "--format", "json", "--cache-dir", str(cache), str(root)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(o == first for o in outs)
    assert all(json.loads(f.read_text())["v"] == 1 for f in cache.glob("*/*.json"))
    assert not list(cache.glob("*/.tmp-*"))


def test_fully_cached_audit_imports_neither_libcst_nor_rich_nor_pydantic(tmp_path):
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache"
    audit_paths([root], RuleSelection(), jobs=1, cache_dir=cache)
    code = (
        "import sys; from fmha_guard.cli import main; "
        f"rc = main(['audit', '--format', 'json', '--cache-dir', {str(cache)!r}, {str(root)!r}]); "
        "loaded = [m for m in ('libcst', 'rich', 'pydantic', 'lint_rules.registry') if m in sys.modules]; "
        "print(loaded, file=sys.stderr); sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stderr.strip() == "[]", run.stderr


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_since_audits_only_changed_and_untracked_python_files(tmp_path, capsys):
    repo = tmp_path / "repo"
    src = repo / "src"
    src.mkdir(parents=True)
    for name in ("a_backend.py", "b_backend.py", "c_backend.py", "d_backend.py"):
        (src / name).write_text(BUGGY)
    (repo / "other_backend.py").write_text(BUGGY)  # outside the audited path
    (repo / ".gitignore").write_text("ignored_backend.py\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    (src / "a_backend.py").write_text(BUGGY + "\n# edited\n")  # unstaged change
    (src / "b_backend.py").write_text(BUGGY + "\n# staged\n")
    _git(repo, "add", "src/b_backend.py")
    (src / "d_backend.py").unlink()  # deleted: nothing to audit
    (src / "new_backend.py").write_text(BUGGY)  # untracked
    (src / "ignored_backend.py").write_text(BUGGY)  # git-ignored
    (repo / "other_backend.py").write_text(BUGGY + "\n")
    assert main(["audit", "--format", "json", "--no-cache", "--since", "HEAD", str(src)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files_scanned"] == 3
    assert sorted(f["path"] for f in report["findings"]) == ["a_backend.py", "b_backend.py", "new_backend.py"]
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "second")
    assert main(["audit", "--format", "json", "--no-cache", "--since", "HEAD", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)["files_scanned"] == 0
    assert main(["audit", "--no-cache", "--since", "no-such-ref", str(src)]) == 2
    err = capsys.readouterr().err
    assert "no-such-ref" in err and "Traceback" not in err
