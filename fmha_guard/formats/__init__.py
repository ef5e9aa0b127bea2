"""The audit report in each output format, one module per format.

Each module has ``render(report) -> str``: ``full`` (default of ``audit``: each finding,
its source line and its evidence, then a summary), ``concise`` (default of ``lint``: one
``path:line:col: CODE [*] message`` line each), ``json``, ``sarif``, ``github``
(workflow commands), ``gitlab`` (Code Quality), ``junit``. ``full`` and ``concise``
return rich markup (:data:`MARKUP`): colored on a terminal, plain anywhere else.
``--statistics`` prints :mod:`.statistics` instead. Modules load only when their format
is asked for: a cached ``--output-format json`` audit imports neither rich nor libcst.
"""

from __future__ import annotations

import importlib

from .report import Report

#: Format name -> module (under this package).
FORMATS = {
    "full": "full",
    "concise": "concise",
    "json": "json_report",
    "sarif": "sarif_report",
    "github": "github",
    "gitlab": "gitlab",
    "junit": "junit",
}
#: Old spelling kept: ``--format text`` is ``full``.
ALIASES = {"text": "full"}
#: Formats written as rich markup.
MARKUP = frozenset({"full", "concise"})

__all__ = ["ALIASES", "FORMATS", "MARKUP", "Report", "render"]


def render(name: str, report: Report) -> str:
    """The report in format ``name``."""
    name = ALIASES.get(name, name)
    module = importlib.import_module(f".{FORMATS[name]}", __name__)
    return module.render(report)
