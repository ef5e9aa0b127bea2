"""Published engine wheels, extracted once into the git-ignored cache.

``published_wheel`` pip-downloads a wheel (``--no-deps``) into ``.cache/wheels/``;
``extracted_engine`` unpacks its pure-Python files into ``.cache/engines/<pkg>-<ver>/``
(compiled extensions and CUDA sources stay in the wheel: nothing on CPU can load them).
``support_packages`` installs the few real small dependencies an engine's import needs
(Triton for ``TRITON_INTERPRET=1``, msgspec, orjson, ...) with ``pip install --target``
into ``.cache/engines/site-<python>/``, so the project's own venv is left as it is.
``engine_sys_path`` is the list of directories a driver subprocess puts first on
``sys.path``: one engine version per process, so two versions never share ``sys.modules``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
WHEEL_CACHE = CACHE / "wheels"
ENGINE_CACHE = CACHE / "engines"
SUPPORT_SITE = ENGINE_CACHE / f"site-py{sys.version_info.major}{sys.version_info.minor}"

#: real small dependencies the engines import at module level on CPU (everything else
#: is a ``sys.modules`` placeholder, see ``tests/engines/import_stubs.py``). Versions pinned
#: so the cache is reproducible; Triton only for its interpreter (``TRITON_INTERPRET=1``).
#: Kept for callers of ``support_packages()`` without arguments (a shared default site).
SUPPORT_REQUIREMENTS = (
    "triton==3.5.1",
    "msgspec==0.19.0",
    "orjson==3.11.5",
    "pyzmq==27.1.0",
    "psutil==7.1.3",
    "transformers==4.57.1",
    "huggingface_hub==0.36.0",
    "tokenizers==0.22.1",
    "safetensors==0.6.2",
    "regex==2025.11.3",
    "pybase64==1.4.2",
    "setproctitle==1.3.7",
    "fastapi==0.121.3",
    "uvloop==0.22.1",
    "sentencepiece==0.2.1",
    "partial_json_parser==0.2.1.1.post7",
    "pyyaml==6.0.3",
    "aiohttp==3.13.2",
    "cloudpickle==3.1.2",
    "interegular==0.3.3",
    "prometheus_client==0.23.1",
    "pillow==12.0.0",
    "einops==0.8.1",
)


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


def extracted_engine(package: str, version: str) -> Path:
    """The wheel's ``.py`` files (and small data files) under ``.cache/engines/<pkg>-<ver>/``.

    Extracted once; a ``.complete`` marker makes an interrupted extraction start over.
    """
    target = ENGINE_CACHE / f"{package}-{version}"
    marker = target / ".complete"
    if marker.exists():
        return target
    wheel = published_wheel(package, version)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith("/") or name.endswith((".so", ".cu", ".cuh", ".h", ".cpp", ".cc")):
                continue
            archive.extract(name, target)
    marker.write_text(wheel.name + "\n")
    return target


def support_packages(requirements: tuple[str, ...] = SUPPORT_REQUIREMENTS, site: Path = SUPPORT_SITE) -> Path:
    """``pip install --no-deps --target site`` the given pinned requirements, once.

    The ``.complete`` marker holds the requirement list; a different list reinstalls
    into a fresh directory (never an upgrade over another list's files).
    """
    marker = site / ".complete"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return site
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
         "--only-binary=:all:", "--target", str(site), *requirements],
        check=True,
    )
    marker.write_text(wanted)
    return site


def engine_sys_path(package: str, version: str, requirements: tuple[str, ...] | None = None) -> list[str]:
    """Directories to put first on ``sys.path`` for one engine version (engine, then support).

    With ``requirements``, the support packages go to a site of that engine version's own
    (``.cache/engines/site-py311-<pkg>-<ver>/``); without, to the shared default site.
    """
    if requirements is None:
        site = support_packages()
    else:
        site = support_packages(requirements, Path(f"{SUPPORT_SITE}-{package}-{version}"))
    return [str(extracted_engine(package, version)), str(site)]


def engine_env(package: str, version: str, requirements: tuple[str, ...] | None = None,
               **extra: str) -> dict[str, str]:
    """Environment for a driver subprocess: the engine first on ``PYTHONPATH``, Triton interpreted."""
    env = dict(os.environ)
    paths = engine_sys_path(package, version, requirements) + [str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["TRITON_INTERPRET"] = "1"
    env.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env.update(extra)
    return env
