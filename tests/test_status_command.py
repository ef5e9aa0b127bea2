"""``fmha-guard status``: would this interpreter activate the guard, and what would it patch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fmha_guard import status_command
from runtime_checks.armed import ROOT_PACKAGES
from runtime_checks.bootstrap import BOOTSTRAP_DIR
from runtime_checks.kernel_specs import ENTRY_POINTS

from .test_run_command import bare_python  # noqa: F401  (fixture)
from .test_runtime_activation import PTH, REPO, START, clean_env


def _status(python: str, *args: str, **variables: str) -> subprocess.CompletedProcess:
    env = clean_env(**variables)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([python, "-m", "fmha_guard", "status", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def site_dirs(tmp_path, monkeypatch):
    """Two empty site directories in place of this interpreter's."""
    dirs = [tmp_path / "site-a", tmp_path / "site-b"]
    for directory in dirs:
        directory.mkdir()
    monkeypatch.setattr(status_command.site, "getsitepackages", lambda: [str(d) for d in dirs])
    monkeypatch.setattr(status_command.site, "ENABLE_USER_SITE", False)
    return dirs


def test_status_with_and_without_the_startup_files(site_dirs):
    report = status_command.guard_status({"FMHA_GUARD": "values"})
    assert report["level"] == "values" and report["settings"]["FMHA_GUARD"] == {
        "value": "values", "parsed": "values", "fallback": None}
    assert not report["would_activate"] and "no fmha_guardrails.pth" in report["reason"]
    assert report["alternative"].startswith("fmha-guard run")
    assert [(f["name"], f["present"]) for f in report["startup"]["files"]] == [
        ("fmha_guardrails.pth", False), ("fmha_guardrails.start", False)] * 2

    shutil.copy(PTH, site_dirs[1])
    shutil.copy(START, site_dirs[1])
    report = status_command.guard_status({"FMHA_GUARD": "values"})
    assert report["would_activate"] and report["alternative"] is None
    assert [f["current"] for f in report["startup"]["files"] if f["present"]] == [True, True]
    (site_dirs[1] / PTH.name).write_text("# an older line\n")
    stale = status_command.guard_status({"FMHA_GUARD": "values"})
    assert [f["current"] for f in stale["startup"]["files"] if f["present"]] == [False, True]

    off = status_command.guard_status({})
    assert not off["would_activate"] and off["reason"].startswith("FMHA_GUARD is unset")


def test_status_explains_a_fallback_and_the_run_bootstrap(site_dirs):
    report = status_command.guard_status({"FMHA_GUARD": "bogus", "FMHA_GUARD_ACTION": "loud",
                                          "PYTHONPATH": BOOTSTRAP_DIR})
    level, action = report["settings"]["FMHA_GUARD"], report["settings"]["FMHA_GUARD_ACTION"]
    assert (level["parsed"], action["parsed"]) == ("shapes", "raise")
    assert "FMHA_GUARD='bogus'" in level["fallback"] and "FMHA_GUARD_ACTION='loud'" in action["fallback"]
    assert report["run_bootstrap"] and report["would_activate"] and "fmha-guard run" in report["reason"]


def test_status_json_lists_entry_points_without_importing_them():
    env = clean_env(FMHA_GUARD="shapes")
    env["PYTHONPATH"] = str(REPO)
    code = ("import json, sys; from fmha_guard.status_command import guard_status; r = guard_status(); "
            "print(json.dumps([r, sorted(m for m in sys.modules if m.partition('.')[0] == 'flashinfer')]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report, imported = json.loads(proc.stdout)
    assert imported == [] and proc.stderr == ""  # found by spec: nothing imported, no guard fired, nothing warned
    assert [e["name"] for e in report["entry_points"]] == [f"{e.module}.{e.qualname}" for e in ENTRY_POINTS]
    installed = {lib["name"]: lib for lib in report["libraries"]}
    assert list(installed) == list(ROOT_PACKAGES)  # vllm.vllm_flash_attn, not all of vllm
    assert {e["library"] for e in report["entry_points"]} <= set(ROOT_PACKAGES)
    if installed["flashinfer"]["installed"]:  # the README's test set-up installs flashinfer-python
        assert installed["flashinfer"]["version"]
        assert all(e["found"] for e in report["entry_points"] if e["library"] == "flashinfer")
    missing = [lib["name"] for lib in report["libraries"] if not lib["installed"]]
    assert not any(e["found"] for e in report["entry_points"] if e["library"] in missing)


def test_status_command_text_and_json(bare_python):  # noqa: F811
    text = _status(sys.executable, FMHA_GUARD="on")
    assert text.returncode == 0, text.stderr
    assert "FMHA_GUARD = 'on' -> shapes" in text.stdout and "flashinfer.decode.trtllm_batch_decode_with_kv_cache" in text.stdout
    bare = _status(str(bare_python), "--format", "json", FMHA_GUARD="values")
    report = json.loads(bare.stdout)
    assert report["python"] == str(bare_python) and not report["would_activate"]
    assert not report["armed_in_this_process"] and report["alternative"]
    assert os.path.basename(report["startup"]["files"][0]["directory"]) == "site-packages"
