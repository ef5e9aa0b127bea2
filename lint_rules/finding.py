"""What a rule reports, and what a file that could not be linted reports.

Kept free of libcst so that a fully cached audit never imports the parser.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Finding:
    """One rule violation.

    ``path`` is relative to the audited root (an archive member path inside a wheel),
    ``line``/``col`` are 1-based, ``symbol`` is ``Class.method``.
    """

    path: str
    line: int
    col: int
    rule: str
    name: str
    symbol: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "name": self.name,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "symbol": self.symbol,
            "message": self.message,
        }


@dataclass(frozen=True, order=True)
class FileError:
    """A file that could not be read or parsed, or on which a rule failed."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}
