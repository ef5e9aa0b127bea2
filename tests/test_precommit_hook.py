"""The ``fmha-guard`` pre-commit hook, run by the real ``pre-commit`` on a temporary git repo.

pre-commit builds a virtualenv and pip-installs this repository into it (network to
PyPI). Two things about pre-commit shape this test:

* ``pre-commit try-repo PATH`` copies only *tracked* changes of PATH (``git add -u``):
  an untracked file such as a new ``.pre-commit-hooks.yaml`` would be missing. So the
  working tree (tracked and untracked, minus git-ignored files) is snapshotted into a
  git repo under ``.cache/pre-commit/`` with a content-determined commit, and the hook
  is taken from that snapshot.
* ``try-repo`` always uses a throw-away store (a fresh virtualenv each run), while a
  ``.pre-commit-config.yaml`` uses ``PRE_COMMIT_HOME``, kept in ``.cache/pre-commit/home``
  so that the hook environment is built once per snapshot commit.

Everything runs with stdin closed and no editor or prompt.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.network

CACHE = REPO / ".cache" / "pre-commit"
SNAPSHOT = CACHE / "snapshot-repo"
HOME = CACHE / "home"
EXAMPLES = REPO / "examples"
FIXED_DATE = "2024-01-01T00:00:00+0000"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT")) and k != "VIRTUAL_ENV"
    }
    env.update(
        PRE_COMMIT_HOME=str(HOME),
        GIT_TERMINAL_PROMPT="0",
        GIT_EDITOR="true",
        GIT_AUTHOR_NAME="fmha-guard test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="fmha-guard test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        PRE_COMMIT_COLOR="never",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=_env(**env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _git(cwd: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args], cwd, check, **env)


def _snapshot_working_tree() -> str:
    """The working tree (tracked + untracked, git-ignored files left out) as one commit of
    a repo at a fixed path; the same content always gives the same sha (cache hits)."""
    listed = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    files = sorted({p for p in listed.split("\0") if p and (REPO / p).is_file()})
    assert ".pre-commit-hooks.yaml" in files
    if SNAPSHOT.exists():
        shutil.rmtree(SNAPSHOT)
    SNAPSHOT.mkdir(parents=True)
    for rel in files:
        (SNAPSHOT / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, SNAPSHOT / rel)
    _git(SNAPSHOT, "init", "-q")
    _git(SNAPSHOT, "add", "-A")
    dates = {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    _git(SNAPSHOT, "commit", "-q", "--no-verify", "-m", "snapshot", **dates)
    return _git(SNAPSHOT, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="module")
def hook_repo() -> tuple[Path, str]:
    HOME.mkdir(parents=True, exist_ok=True)
    return SNAPSHOT, _snapshot_working_tree()


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "serving-engine"
    project.mkdir()
    _git(project, "init", "-q")
    return project


def _precommit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pre_commit", *args], cwd, check=False)


def test_commit_of_a_buggy_backend_fails_and_the_fixed_one_passes(tmp_path, hook_repo):
    repo, rev = hook_repo
    project = _project(tmp_path)
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {repo}\n    rev: {rev}\n    hooks:\n      - id: fmha-guard\n"
    )
    _git(project, "add", ".pre-commit-config.yaml")
    _precommit("install", cwd=project).check_returncode()
    first = _git(project, "commit", "-q", "-m", "config", check=False)
    assert first.returncode == 0, first.stdout + first.stderr

    backend = project / "attention" / "trtllm_backend.py"
    backend.parent.mkdir()
    backend.write_text((EXAMPLES / "padded_batch_size_buggy.py").read_text())
    _git(project, "add", "-A")
    buggy = _git(project, "commit", "-m", "buggy backend", check=False)
    out = buggy.stdout + buggy.stderr
    assert buggy.returncode != 0, out
    assert "attention/trtllm_backend.py:46:13: GR001 [*] DP-padded `forward_batch.batch_size`" in out
    assert "fmha-guard (attention-metadata lint)" in out and "Failed" in out
    assert _git(project, "rev-list", "--count", "HEAD").stdout.strip() == "1"  # not committed

    backend.write_text((EXAMPLES / "padded_batch_size_fixed.py").read_text())
    _git(project, "add", "-A")
    fixed = _git(project, "commit", "-m", "fixed backend", check=False)
    out = fixed.stdout + fixed.stderr
    assert fixed.returncode == 0, out
    assert "GR001" not in out and "Passed" in out
    assert _git(project, "rev-list", "--count", "HEAD").stdout.strip() == "2"
    assert backend.read_text() == (EXAMPLES / "padded_batch_size_fixed.py").read_text()  # check-only

    # the hook's environment has the core dependencies, and no torch
    with sqlite3.connect(HOME / "db.db") as db:
        (env_root,) = db.execute("SELECT path FROM repos WHERE repo = ? AND ref = ?", (str(repo), rev)).fetchone()
    (python,) = Path(env_root).glob("py_env-*/bin/python")
    probe = "import importlib.util as u; print([m for m in ('torch', 'libcst', 'pydantic', 'rich') if u.find_spec(m)])"
    assert _run([str(python), "-c", probe], project).stdout.strip() == "['libcst', 'pydantic', 'rich']"


def test_try_repo_fails_on_the_buggy_backend_and_passes_the_fixed_one(tmp_path, hook_repo):
    repo, rev = hook_repo
    project = _project(tmp_path)
    for name in ("padded_batch_size_buggy.py", "padded_batch_size_fixed.py"):
        shutil.copy(EXAMPLES / name, project / name)
    _git(project, "add", "-A")
    args = ("try-repo", str(repo), "fmha-guard", "--ref", rev, "--files")
    buggy = _precommit(*args, "padded_batch_size_buggy.py", cwd=project)
    out = buggy.stdout + buggy.stderr
    assert buggy.returncode == 1, out
    assert "padded_batch_size_buggy.py:46:13: GR001" in out
    fixed = _precommit(*args, "padded_batch_size_fixed.py", cwd=project)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "GR001" not in fixed.stdout
