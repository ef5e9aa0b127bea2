"""Build step (setuptools only; never imported at run time): ship the example backends.

``setup.cfg`` names :class:`build_py` as the ``build_py`` command. On top of the startup
files (:class:`runtime_checks.startup_files.build_py`) it copies the repository's
``examples/*_buggy.py`` / ``*_fixed.py`` into the built package as
``fmha_guard/example_backends/`` (:mod:`fmha_guard.bundled_examples` reads them), so
``pip install . && fmha-guard audit --examples`` works from any directory. They are not
``package_data``: they live in ``examples/``, outside the package, and stay there.
An editable build copies nothing (the checkout's ``examples/`` is read in place);
``get_source_files`` lists them, so an sdist carries them too.

setuptools loads a ``cmdclass`` module by its file, with the project not on
``sys.path``: this module imports nothing of the project by name, it loads the two
modules it builds on from their files.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from types import ModuleType

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ROOT, relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_startup_build_py = _load(os.path.join("runtime_checks", "startup_files.py"), "_fmha_startup_files").build_py
_bundled = _load(os.path.join("fmha_guard", "bundled_examples.py"), "_fmha_bundled_examples")
PACKAGE_DIR, PATTERNS = _bundled.PACKAGE_DIR, _bundled.PATTERNS

_EXAMPLES = "examples"  # relative to the project root (setuptools runs there)
_PACKAGE = "fmha_guard"


def _sources() -> list[str]:
    return sorted(path for pattern in PATTERNS for path in glob.glob(os.path.join(_EXAMPLES, pattern)))


class build_py(_startup_build_py):  # noqa: N801 - setuptools' command naming
    """``build_py`` that also ships the example backends inside ``fmha_guard``."""

    def _targets(self) -> list[tuple[str, str]]:
        folder = os.path.join(self.build_lib, _PACKAGE, PACKAGE_DIR)
        return [(src, os.path.join(folder, os.path.basename(src))) for src in _sources()]

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for src, dst in self._targets():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [dst for _, dst in self._targets()]
        return outputs

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *_sources()]
