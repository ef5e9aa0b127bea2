"""The example backends ship inside the wheel: ``pip install . && fmha-guard audit
--examples`` works from any directory, not only in a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fmha_guard.bundled_examples import PACKAGE_DIR, PATTERNS, example_files

REPO = Path(__file__).resolve().parent.parent
PAIRS = sorted(p.name for pattern in PATTERNS for p in (REPO / "examples").glob(pattern))


def test_the_pairs_are_what_the_flag_audits():
    assert PAIRS == ["padded_batch_size_buggy.py", "padded_batch_size_fixed.py",
                     "stale_swa_pool_buggy.py", "stale_swa_pool_fixed.py"]
    # a checkout (editable install): the checkout's examples/, the pairs only
    assert sorted(p.name for p in example_files()) == PAIRS
    assert {p.parent for p in example_files()} == {REPO / "examples"}


def test_build_step_loads_without_the_project_on_sys_path(tmp_path):
    # setuptools loads a cmdclass module by its file, the project not importable (an
    # isolated `pip install .`); -S: no site, so no editable-install finder either
    import setuptools

    site_packages = str(Path(setuptools.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.append({site_packages!r}); import importlib.util as u; "
        f"spec = u.spec_from_file_location('fmha_guard.build_examples', {str(REPO / 'fmha_guard' / 'build_examples.py')!r}); "
        "m = u.module_from_spec(spec); spec.loader.exec_module(m); "
        "assert 'runtime_checks' not in sys.modules and 'fmha_guard' not in sys.modules; "
        "print(m.build_py.__mro__[1].__name__, m.PACKAGE_DIR)"
    )
    run = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split() == ["build_py", PACKAGE_DIR], run.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the working tree (never in the tree itself)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".cache", ".venv", "build", "dist", ".git", ".whl",
                                    ".jitcache", ".hypothesis", ".pytest_cache")
    shutil.copytree(REPO, src, ignore=ignore)
    out = tmp / "dist"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (built,) = out.glob("fmha_guardrails-*.whl")
    return built


def test_wheel_carries_the_example_backends(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"fmha_guard/{PACKAGE_DIR}/"))
        assert shipped == PAIRS
        for name in PAIRS:
            member = archive.read(f"fmha_guard/{PACKAGE_DIR}/{name}")
            assert member == (REPO / "examples" / name).read_bytes()
        record = archive.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert f"fmha_guard/{PACKAGE_DIR}/padded_batch_size_buggy.py," in record  # pip uninstall removes them
    assert not any("serve_loop" in n or "seed_bugs" in n for n in names)  # only the pairs


def test_installed_wheel_audits_its_examples_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import fmha_guard; print(fmha_guard.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert Path(probe.stdout.strip()).is_relative_to(site), probe.stdout + probe.stderr  # the wheel's copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "fmha_guard", "audit", "--examples", "--format", "json"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    findings = json.loads(run.stdout)["findings"]
    assert sorted((Path(f["file"]).name, f["rule"]) for f in findings) == [
        ("padded_batch_size_buggy.py", "GR001"), ("stale_swa_pool_buggy.py", "GR002"), ("stale_swa_pool_buggy.py", "GR002")
    ]
    assert all(Path(f["file"]).is_relative_to(site / "fmha_guard" / PACKAGE_DIR) for f in findings)
    assert list(elsewhere.iterdir()) == []  # nothing written where it ran
