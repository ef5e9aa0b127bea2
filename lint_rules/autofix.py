"""Applies the fixes rules attach to their findings (``--fix`` / ``--diff``).

A rule that can fix what it reports is ``FIXABLE`` and passes a
:class:`~lint_rules.rule.Replacement` (a node of the linted module and the node to put
in its place) with the finding, as Fixit's ``report(node, replacement=...)``; what a
fix is belongs to the rule (GR001's is in its own module). This engine knows no rule:

* the file is parsed again and each fixable rule with findings there is run on it, so
  that its replacements refer to this parse; a replacement is taken when its finding
  is one of the given findings (same rule, line and column);
* the replacements are applied as one libcst transformation: only the replaced nodes
  change, the rest of the file is kept byte for byte (comments, line endings);
* a replacement is kept only if re-linting the fixed source shows no finding of its
  rule inside the replaced node; the others are dropped and the rest applied again
  (at most one round per replacement, usually one). A replacement nested inside
  another is dropped.

Nothing is ever interactive. :func:`apply_fixes` works on the files of an
:class:`~lint_rules.engine.AuditResult` under a directory root; findings read from a
wheel or an sdist are never fixed (an archive is not edited in place, and no diff is
produced for it).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .config import LintConfig
from .engine import lint_source
from .finding import Finding
from .registry import ALL_RULES
from .rule import ModuleContext, Replacement
from .sources import is_archive

if TYPE_CHECKING:
    from .engine import AuditResult
    from .rule import LintRule

#: code -> rule, for the rules that attach fixes.
FIXABLE_RULES: dict[str, type[LintRule]] = {rule.CODE: rule for rule in ALL_RULES if rule.FIXABLE}


class _Replace(cst.CSTTransformer):
    """Puts each replacement's ``new`` node in place of its ``node`` (by identity)."""

    def __init__(self, replacements: Sequence[Replacement]) -> None:
        super().__init__()
        self.by_node = {id(r.node): r for r in replacements}
        self.applied: set[int] = set()
        self._inside = 0

    def on_visit(self, node: cst.CSTNode) -> bool:
        if id(node) in self.by_node:
            self._inside += 1
        return True

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):  # type: ignore[override]
        rep = self.by_node.get(id(original))
        if rep is None:
            return updated
        self._inside -= 1
        if self._inside:  # nested inside another replacement: that one wins
            return updated
        self.applied.add(id(original))
        return rep.new


def _still_flagged(
    code: str, module: cst.Module, fixes: Sequence[tuple[str, Replacement]], config: LintConfig
) -> list[bool]:
    """For each fix applied in ``module`` (whose text is ``code``): does a finding of its
    rule in the re-linted source still fall inside its new node?"""
    rules = [FIXABLE_RULES[c] for c in sorted({rule for rule, _ in fixes})]
    findings, _, _ = lint_source("<fixed>", code, rules, config)
    layout = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    still: list[bool] = []
    for rule, rep in fixes:
        rng = layout[rep.new]
        start, end = (rng.start.line, rng.start.column + 1), (rng.end.line, rng.end.column + 1)
        still.append(any(f.rule == rule and start <= (f.line, f.col) <= end for f in findings))
    return still


def fix_source(source: str, findings: Iterable[Finding], config: LintConfig | None = None) -> str:
    """The source with the rules' fixes applied at ``findings``; unchanged if none applies.

    ``findings`` are this file's findings (of any rule; only fixable rules' count).
    """
    config = config or LintConfig()
    wanted = {(f.rule, f.line, f.col) for f in findings if f.rule in FIXABLE_RULES}
    if not wanted:
        return source
    try:
        module = cst.parse_module(source)
    except Exception:  # the audit already reported the parse error
        return source
    ctx = ModuleContext("<fix>", module, config, source)
    for code in sorted({rule for rule, _, _ in wanted}):
        try:
            list(FIXABLE_RULES[code](config).check(ctx))
        except Exception:  # the audit already reported the rule's error
            return source
    fixes: list[tuple[str, Replacement]] = []
    seen: set[int] = set()
    for finding, rep in ctx.replacements.items():
        if (finding.rule, finding.line, finding.col) in wanted and id(rep.node) not in seen:
            seen.add(id(rep.node))
            fixes.append((finding.rule, rep))
    while fixes:
        transform = _Replace([rep for _, rep in fixes])
        fixed = module.visit(transform)
        fixes = [(rule, rep) for rule, rep in fixes if id(rep.node) in transform.applied]
        if not fixes:
            break
        still = _still_flagged(fixed.code, fixed, fixes, config)
        if not any(still):
            return fixed.code
        fixes = [fix for fix, bad in zip(fixes, still) if not bad]
    return source


def apply_fixes(result: "AuditResult", root: Path, write: bool, config: LintConfig | None = None) -> list[str]:
    """Fix the findings of ``result`` in the files under ``root``; one unified diff per
    changed file (``a/PATH`` / ``b/PATH``, paths relative to ``root`` as in the findings).

    Files are rewritten only when ``write`` is true (bytes as read, line endings kept).
    A ``root`` that is a wheel / sdist / zip is never touched: returns ``[]``. Findings
    whose file no longer exists are skipped.
    """
    root = Path(root)
    if root.is_file() and is_archive(root):
        return []
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        if f.rule in FIXABLE_RULES:
            by_path[f.path].append(f)
    diffs: list[str] = []
    for rel, findings in sorted(by_path.items()):
        file = root / rel
        if not file.is_file() or is_archive(file):
            continue
        data = file.read_bytes()
        try:
            before = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        after = fix_source(before, findings, config)
        if after == before:
            continue
        diffs.append(
            "".join(
                difflib.unified_diff(
                    before.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    fromfile=f"a/{rel}",
                    tofile=f"b/{rel}",
                )
            )
        )
        if write:
            file.write_bytes(after.encode("utf-8"))
    return diffs


__all__ = ["FIXABLE_RULES", "apply_fixes", "fix_source"]
