"""``fmha-guard run``: the guard on in a program and its children, with or without the ``.pth``.

The programs run in a virtual environment made for the test that lacks fmha-guardrails'
startup files: its site-packages holds one ``.pth`` *path* line naming this
environment's site-packages (pydantic, torch). ``site`` adds such a directory to
``sys.path`` without reading the ``.pth`` files inside it, so ``fmha_guardrails.pth``
(and the editable install's finder) never run there, as after a ``pip install .``
that left no ``.pth``. The fake ``flashinfer`` and the repository come in on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from fmha_guard.run_command import guarded_environment
from guardrails.config import GuardConfigError
from runtime_checks.bootstrap import BOOTSTRAP_DIR

from .test_runtime_activation import REPO, clean_env, write_fake_flashinfer

_CHILD = """
import json, os, subprocess, sys
before = "flashinfer" in sys.modules
import flashinfer.decode
from runtime_checks.state import STATE
grandchild = subprocess.run([sys.executable, "-c", {grandchild!r}], capture_output=True, text=True)
print("RESULT", json.dumps({{
    "startup_ran": "runtime_checks.startup" in sys.modules,
    "level": str(STATE.level), "action": str(STATE.action),
    "guarded": hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__"),
    "grandchild": grandchild.stdout.strip(), "grandchild_err": grandchild.stderr,
    "env": [os.environ.get("FMHA_GUARD"), os.environ.get("FMHA_GUARD_ACTION")],
}}))
"""
_GRANDCHILD = (
    "import flashinfer.decode as d; from runtime_checks.state import STATE; "
    "print(STATE.level, hasattr(d.trtllm_batch_decode_with_kv_cache, '__fmha_guard__'))"
)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A venv's interpreter that sees this environment's packages but none of its ``.pth`` files."""
    root = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(root, with_pip=False, symlinks=os.name != "nt")
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(purelib, "this_env_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> Path:
    return write_fake_flashinfer(tmp_path_factory.mktemp("fake"))


def _env(fake: Path, *extra_path: Path, **variables: str) -> dict[str, str]:
    env = clean_env(**variables)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), str(fake), str(REPO)])
    return env


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _child(python: Path) -> list[str]:
    return [str(python), "-c", _CHILD.format(grandchild=_GRANDCHILD)]


def test_the_bare_venv_hides_the_pth(bare_python, fake_dir, tmp_path):
    """Control: FMHA_GUARD alone does nothing there (what a missing .pth looked like)."""
    proc = subprocess.run(_child(bare_python), env=_env(fake_dir, FMHA_GUARD="values"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    result = _result(proc)
    assert (result["startup_ran"], result["guarded"], result["level"]) == (False, False, "off")
    assert result["grandchild"] == "off False"


def test_run_guards_the_program_and_its_children_without_the_pth(bare_python, fake_dir, tmp_path):
    proc = subprocess.run(
        [str(bare_python), "-m", "fmha_guard", "run", "--level", "values", "--action", "warn", "--", *_child(bare_python)],
        env=_env(fake_dir), cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    result = _result(proc)
    assert (result["startup_ran"], result["guarded"], result["level"], result["action"]) == (True, True, "values", "warn")
    assert result["env"] == ["values", "warn"]
    assert result["grandchild"] == "values True", result["grandchild_err"]
    assert proc.stderr == ""


def test_run_chains_to_an_existing_sitecustomize(bare_python, fake_dir, tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sitecustomize.py").write_text("import os\nos.environ['CHAINED'] = __file__\n")
    code = textwrap.dedent("""
        import json, os, sys, sitecustomize, flashinfer.decode
        print("RESULT", json.dumps([os.environ.get("CHAINED"), sitecustomize.__file__,
              hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__"),
              any(os.path.abspath(p) == os.path.abspath({bootstrap!r}) for p in sys.path)]))
    """).format(bootstrap=BOOTSTRAP_DIR)
    proc = subprocess.run(
        [str(bare_python), "-m", "fmha_guard", "run", "--", str(bare_python), "-c", code],
        env=_env(fake_dir, custom), cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    chained, module_file, guarded, bootstrap_on_path = _result(proc)
    assert chained == module_file == str(custom / "sitecustomize.py")
    assert guarded and not bootstrap_on_path


def test_run_passes_the_exit_status_through(fake_dir, tmp_path):
    def run(*argv: str, **variables: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fmha_guard", "run", *argv], env=_env(fake_dir, **variables),
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)

    assert run("--", sys.executable, "-c", "raise SystemExit(7)").returncode == 7
    missing = run("--", "no-such-command-fmha")
    assert missing.returncode == 127 and "no-such-command-fmha: command not found" in missing.stderr
    empty = run()
    assert empty.returncode == 2 and "no command given" in empty.stderr
    bad = run("--level", "loud", "--", sys.executable, "-c", "pass")
    assert bad.returncode == 2 and "--level='loud' is not a guard level" in bad.stderr
    # a bad inherited value fails closed: warned once here, the child gets what it fell back to
    inherited = run("--", sys.executable, "-c", "import os; print('CHILD', os.environ['FMHA_GUARD'])", FMHA_GUARD="loud")
    assert inherited.returncode == 0 and "CHILD shapes" in inherited.stdout
    assert inherited.stderr.count("FmhaGuardConfigWarning") == 1 and "FMHA_GUARD='loud'" in inherited.stderr


def test_guarded_environment():
    env = guarded_environment(None, None, {"PYTHONPATH": f"/a{os.pathsep}{BOOTSTRAP_DIR}", "OTHER": "1"})
    assert env == {"PYTHONPATH": os.pathsep.join([BOOTSTRAP_DIR, "/a"]), "OTHER": "1",
                   "FMHA_GUARD": "shapes", "FMHA_GUARD_ACTION": "raise"}
    assert guarded_environment(None, None, env)["PYTHONPATH"] == env["PYTHONPATH"]  # nested runs: once
    kept = guarded_environment(None, None, {"FMHA_GUARD": "Values", "FMHA_GUARD_ACTION": "WARN"})
    assert (kept["FMHA_GUARD"], kept["FMHA_GUARD_ACTION"]) == ("values", "warn")
    explicit = guarded_environment("off", "warn", {"FMHA_GUARD": "values"})
    assert (explicit["FMHA_GUARD"], explicit["FMHA_GUARD_ACTION"]) == ("off", "warn")
    with pytest.raises(GuardConfigError, match="--action='loud'"):
        guarded_environment(None, "loud", {})
