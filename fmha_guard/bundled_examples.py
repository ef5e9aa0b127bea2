"""The example backends ``fmha-guard audit --examples`` audits: the buggy / fixed pairs of
the repository's ``examples/`` (``padded_batch_size_buggy.py`` ...), one per seed bug.

``examples/`` stays the user-facing folder of the repository and the only copy in git;
the build (:mod:`fmha_guard.build_examples`) copies the pairs into the package as
``fmha_guard/example_backends/``, so an installed wheel carries them. An editable
install or a source checkout has no such folder: there the checkout's ``examples/``
is read.
"""

from __future__ import annotations

from pathlib import Path

#: The files that make the pairs, in ``examples/`` and in the package.
PATTERNS = ("*_buggy.py", "*_fixed.py")
#: Where the build puts them, inside this package.
PACKAGE_DIR = "example_backends"

_HERE = Path(__file__).resolve().parent


def example_files() -> list[Path]:
    """The example backends: the installed copy, else the checkout's ``examples/``."""
    for folder in (_HERE / PACKAGE_DIR, _HERE.parent / "examples"):
        files = sorted(p for pattern in PATTERNS for p in folder.glob(pattern))
        if files:
            return files
    from .exit_status import UsageError  # not at the top: the build step loads this file alone

    raise UsageError(
        f"the bundled example backends are missing: neither {_HERE / PACKAGE_DIR} nor "
        f"{_HERE.parent / 'examples'} holds {' / '.join(PATTERNS)} (reinstall fmha-guardrails)"
    )
