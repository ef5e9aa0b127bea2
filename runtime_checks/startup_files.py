"""Build step (setuptools only; never imported at run time): ship the startup files.

``fmha_guardrails.pth`` and ``fmha_guardrails.start`` (in this directory; what they
do: :mod:`runtime_checks.startup`) must land at the root of site-packages, where
``site`` looks for them, not inside the package. ``setup.cfg`` names
:class:`build_py` as the ``build_py`` command (``[options] cmdclass``); it builds
the packages as usual, then:

* regular build (``pip install .``, ``python -m build``): copies both files to the
  root of ``build_lib``, i.e. the root (purelib) of the wheel;
* editable build (``pip install -e .``, PEP 660; setuptools sets
  ``editable_mode``): the editable wheel only carries setuptools' own ``.pth`` /
  finder plus what is written into its unpacked directory, which is the
  ``install`` command's ``install_lib`` during that build. The files are copied
  there, so the editable install gets them too (``[options.data_files]`` would not
  do: setuptools skips data files in editable wheels).

``get_source_files`` lists both files, so sdists include them without a MANIFEST.in.
Either way they are recorded in the wheel's RECORD and ``pip uninstall`` removes them.
"""

from __future__ import annotations

import os

from setuptools.command.build_py import build_py as _build_py

STARTUP_FILES = ("fmha_guardrails.pth", "fmha_guardrails.start")
"""Installed at the root of site-packages; sources in this package's directory."""

_SOURCE_DIR = "runtime_checks"  # relative to the project root (setuptools runs there)


class build_py(_build_py):  # noqa: N801 - setuptools' command naming
    """``build_py`` that also puts :data:`STARTUP_FILES` at the root of the (editable) wheel."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.mkpath(target)
        for name in STARTUP_FILES:
            self.copy_file(os.path.join(_SOURCE_DIR, name), os.path.join(target, name), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [os.path.join(self.build_lib, name) for name in STARTUP_FILES]
        return outputs

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *(f"{_SOURCE_DIR}/{name}" for name in STARTUP_FILES)]
