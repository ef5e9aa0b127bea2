"""Shared fixtures: the repository root, published SGLang wheels (downloaded, cached, never committed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parent.parent
WHEEL_CACHE = REPO / ".cache" / "wheels"


def published_wheel(package: str, version: str) -> Path:
    """``pip download --no-deps package==version`` into the git-ignored cache; the wheel's path."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(WHEEL_CACHE.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "-d", str(WHEEL_CACHE), f"{package}=={version}"],
            check=True,
        )
        found = sorted(WHEEL_CACHE.glob(f"{stem}-{version}-*.whl"))
    assert found, f"pip download produced no wheel for {package}=={version}"
    return found[0]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
