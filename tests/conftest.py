"""Shared fixtures: the repository root, published SGLang wheels (downloaded, cached, never committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parent.parent

# the wheel cache lives with the engine kits (tests/engines/engine_wheels.py); re-exported
# here for the tests that audit published wheels
from .engines.engine_wheels import WHEEL_CACHE, published_wheel  # noqa: E402,F401


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
