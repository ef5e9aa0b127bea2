"""The ``sitecustomize`` bootstrap of ``fmha-guard run``, for interpreters without the startup files.

``fmha-guard run -- CMD`` (:mod:`fmha_guard.run_command`) puts this directory first on
``PYTHONPATH``, the way ``opentelemetry-instrument`` and ``ddtrace-run`` do. Every
Python process of the command (and of its children, which inherit ``PYTHONPATH``)
then imports :mod:`sitecustomize <runtime_checks.bootstrap.sitecustomize>` from here at
start, which arms the guard as the ``.pth`` line would
(:func:`runtime_checks.startup.activate`, at most once per process) and then imports
the ``sitecustomize`` this one shadows, if there is one.
"""

from __future__ import annotations

import os

__all__ = ["BOOTSTRAP_DIR"]

BOOTSTRAP_DIR = os.path.dirname(os.path.abspath(__file__))
"""The directory ``fmha-guard run`` prepends to ``PYTHONPATH``."""
