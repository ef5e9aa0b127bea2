"""``--output-format github``: GitHub Actions workflow commands, one per finding, so that
findings show as annotations on the pull request::

    ::error file=src/backend.py,line=46,col=13,title=GR001::DP-padded `forward_batch.batch_size` ...

Pseudo-rules (GR900 / GR901) are ``::warning``; a file that could not be linted is an
``::error`` without a line. Values are escaped as the runner expects (``%``, CR, LF;
in properties also ``:`` and ``,``).
"""

from __future__ import annotations

from lint_rules.suppressions import PSEUDO_RULES

from .report import Report


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render(report: Report) -> str:
    lines = []
    for f in report.findings():
        level = "warning" if f.rule in PSEUDO_RULES else "error"
        props = f"file={_prop(report.path(f))},line={f.line},col={f.col},title={_prop(f.rule)}"
        lines.append(f"::{level} {props}::{_data(f.message)}")
    for e in report.errors():
        lines.append(f"::error file={_prop(report.path(e))},title=fmha-guard::{_data(e.message)}")
    return "".join(line + "\n" for line in lines)
