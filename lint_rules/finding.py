"""What a rule reports, and what a file that could not be linted reports.

Kept free of libcst so that a fully cached audit never imports the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Evidence:
    """One step of the reasoning behind a finding: ``label`` (what this step is: ``padded
    size``, ``argument``, ``kernel``), the 1-based ``line`` it lies on (0: not in this
    file, e.g. a kernel reached through a helper), and ``code``, that step's source text
    on one line (the report prints it without reading the file again)."""

    label: str
    line: int
    code: str

    def as_dict(self) -> dict[str, object]:
        return {"label": self.label, "line": self.line, "code": self.code}


@dataclass(frozen=True, order=True)
class Finding:
    """One rule violation.

    ``path`` is relative to the audited root (an archive member path inside a wheel; the
    path as given for a single file), ``line``/``col`` are 1-based, ``symbol`` is
    ``Class.method``. Not part of its identity: ``fixable`` (the rule attached a fix that
    ``--fix`` applies), ``evidence`` (where the offending value comes from, which argument,
    which kernel) and ``root`` (the absolute path of the directory or archive the finding
    was read from; empty for a single file, whose ``path`` already says where it is).
    """

    path: str
    line: int
    col: int
    rule: str
    name: str
    symbol: str
    message: str
    fixable: bool = field(default=False, compare=False)
    evidence: tuple[Evidence, ...] = field(default=(), compare=False)
    root: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, object]:
        """The JSON report's keys (``fixable`` and ``evidence`` added to the original seven)."""
        return {
            "rule": self.rule,
            "name": self.name,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "symbol": self.symbol,
            "message": self.message,
            "fixable": self.fixable,
            "evidence": [e.as_dict() for e in self.evidence],
        }

    def to_row(self) -> list[object]:
        """The finding without its path, as the result cache stores it (JSON-able)."""
        row: list[object] = [self.line, self.col, self.rule, self.name, self.symbol, self.message]
        if self.fixable or self.evidence:
            row += [self.fixable, [[e.label, e.line, e.code] for e in self.evidence]]
        return row

    @classmethod
    def from_row(cls, path: str, row: list) -> "Finding":
        """The inverse of :meth:`to_row`."""
        line, col, rule, name, symbol, message, *rest = row
        fixable, evidence = (rest[0], tuple(Evidence(*e) for e in rest[1])) if rest else (False, ())
        return cls(path, line, col, rule, name, symbol, message, bool(fixable), evidence)

    def with_root(self, root: str) -> "Finding":
        return replace(self, root=root)


@dataclass(frozen=True, order=True)
class FileError:
    """A file that could not be read or parsed, or on which a rule failed (``root``: as
    :attr:`Finding.root`)."""

    path: str
    message: str
    root: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}
