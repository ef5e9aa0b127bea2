"""The ``.py`` tree of a published engine release, fetched once into the git-ignored cache.

:func:`release_tree` answers, in this order: a tree of ``$FMHA_GUARD_CORPUS/<engine>-<ver>/``
(already extracted releases, e.g. ``/work/corpus``); the engine kits' full extraction
``.cache/engines/<engine>-<ver>/`` (:func:`tests.engines.engine_wheels.extracted_engine`);
this module's own ``.cache/engines-py/<engine>-<ver>/``. Failing all three it downloads the
wheel (``pip download --no-deps --no-cache-dir``, so pip's HTTP cache does not keep a second
copy) and extracts only its ``.py`` members. A wheel up to :data:`KEEP_WHEEL_BYTES` (SGLang's,
a few MB) is kept in ``.cache/wheels/`` for the other tests; a larger one (vLLM's, ~400 MB of
compiled kernels) is deleted once its ``.py`` tree (~60 MB) is out, so CI's disk holds each
vLLM release once, as source. A ``.complete`` marker makes an interrupted extraction start over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.engines.engine_wheels import CACHE, ENGINE_CACHE, WHEEL_CACHE

#: where this module extracts ``.py`` trees
SOURCE_CACHE = CACHE / "engines-py"
#: environment variable naming a directory of extracted ``<engine>-<ver>/`` trees
CORPUS_ENV = "FMHA_GUARD_CORPUS"
#: wheels at most this large stay in ``.cache/wheels/`` after extraction
KEEP_WHEEL_BYTES = 64 * 1024 * 1024


class ReleaseUnavailable(RuntimeError):
    """``pip download`` found no wheel for ``engine==version`` (not published, or no network)."""


def _corpus_tree(engine: str, version: str) -> Path | None:
    corpus = os.environ.get(CORPUS_ENV)
    if not corpus:
        return None
    tree = Path(corpus) / f"{engine}-{version}"
    return tree if (tree / engine).is_dir() else None


def _extract_py(wheel: Path, engine: str, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(f"{engine}/") and name.endswith(".py"):
                archive.extract(name, target)
    (target / ".complete").write_text(wheel.name + "\n")


def _download(engine: str, version: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
         "-q", "-d", str(into), f"{engine}=={version}"],
        capture_output=True, text=True,
    )
    found = sorted(into.glob(f"{engine.replace('-', '_')}-{version}-*.whl"))
    if done.returncode != 0 or not found:
        raise ReleaseUnavailable(
            f"pip download {engine}=={version} failed (rc={done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return found[0]


def release_tree(engine: str, version: str) -> Path:
    """The directory holding ``<engine>/...`` (``.py`` files) of published ``engine==version``.

    Raises :class:`ReleaseUnavailable` when the wheel cannot be downloaded.
    """
    tree = _corpus_tree(engine, version)
    if tree is not None:
        return tree
    full = ENGINE_CACHE / f"{engine}-{version}"
    if (full / ".complete").exists():
        return full
    target = SOURCE_CACHE / f"{engine}-{version}"
    if (target / ".complete").exists():
        return target
    kept = sorted(WHEEL_CACHE.glob(f"{engine.replace('-', '_')}-{version}-*.whl"))
    if kept:
        _extract_py(kept[0], engine, target)
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="download-") as tmp:
        wheel = _download(engine, version, Path(tmp))
        _extract_py(wheel, engine, target)
        if wheel.stat().st_size <= KEEP_WHEEL_BYTES:
            WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
            shutil.move(str(wheel), WHEEL_CACHE / wheel.name)
    return target


def release_file(engine: str, version: str, path: str) -> str:
    """The text of ``path`` (``sglang/srt/...``) in ``engine==version``.

    Raises ``FileNotFoundError`` naming the release when the file is not in it.
    """
    file = release_tree(engine, version) / path
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not in published {engine}=={version} ({file.parent} has no such file)")
    return file.read_text(encoding="utf-8")
