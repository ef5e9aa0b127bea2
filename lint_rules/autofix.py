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

Nothing is ever interactive. :func:`apply_fixes` works on the files an
:class:`~lint_rules.engine.AuditResult` read from disk; findings read from a wheel or
an sdist are never fixed (an archive is not edited in place, and no diff is produced
for it). Writing is all or nothing: every file is checked before the first is
replaced, each through a temporary file beside it (:mod:`lint_rules.atomic_write`).
"""

from __future__ import annotations

import difflib
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .config import LintConfig
from .engine import lint_source
from .finding import Finding
from .nesting import nesting_problem
from .registry import ALL_RULES
from .rule import ModuleContext, Replacement
from .atomic_write import discard, temporary_copy
from .sources import decode, is_archive

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
    if nesting_problem(source) is not None:  # the audit reported it; never parsed
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


class FixError(ValueError):
    """``--fix`` cannot write every file it would change; it wrote none of them."""


@dataclass(frozen=True)
class _Rewrite:
    """One file ``--fix`` will rewrite: where (its real path), what it held when read,
    its ``stat`` then, and its new bytes."""

    rel: str
    file: str
    before: bytes
    after: bytes
    stat: os.stat_result


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unwritable(rewrite: _Rewrite) -> str | None:
    """Why ``rewrite`` cannot be done now, or ``None``."""
    folder = os.path.dirname(rewrite.file)
    if not rewrite.stat.st_mode & 0o222:  # marked read-only: kept so even for root
        return "read-only"
    if not os.access(rewrite.file, os.W_OK):
        return "not writable"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create a file in {folder}"
    try:
        st = os.stat(rewrite.file)
        with open(rewrite.file, "rb") as handle:
            unchanged = _signature(st) == _signature(rewrite.stat) and handle.read() == rewrite.before
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return None if unchanged else "changed since it was read"


def _write_all(rewrites: Sequence[_Rewrite]) -> None:
    """Every rewrite or none: each target checked, then a temporary copy of each new
    file written beside it (its mode kept), then each moved over its target."""
    problems = [f"{r.rel}: {why}" for r in rewrites if (why := _unwritable(r)) is not None]
    temps: list[str] = []
    try:
        if not problems:
            for r in rewrites:
                try:
                    temps.append(temporary_copy(Path(r.file), r.after, stat.S_IMODE(r.stat.st_mode)))
                except OSError as exc:
                    problems.append(f"{r.rel}: cannot write beside it: {exc.strerror or exc}")
                    break
        if problems:
            raise FixError(f"--fix wrote nothing: {'; '.join(problems)}")
        done: list[str] = []
        for r, tmp in zip(rewrites, temps):
            try:
                os.replace(tmp, r.file)
            except OSError as exc:  # the checks passed: only a failing disk gets here
                raise FixError(f"--fix stopped at {r.rel}: {exc.strerror or exc}; rewrote {', '.join(done) or 'nothing'}") from None
            done.append(r.rel)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                discard(tmp)


def apply_fixes(result: "AuditResult", root: Path, write: bool, config: LintConfig | None = None) -> list[str]:
    """Fix the findings of ``result`` in the files it read from disk; one unified diff per
    changed file (``a/PATH`` / ``b/PATH``, ``PATH`` as in the findings).

    The files are those ``result.locations`` names (an archive member never is: nothing
    inside an archive is resolved against the filesystem); one that is gone since the
    audit is skipped. A symlinked file is rewritten at its target. With ``write``, every
    file is checked first (inside the audited directory, readable, writable, unchanged
    since read; one with no write bit is read-only, even to root), then all are written atomically with their mode kept (bytes as read,
    encoding, BOM and line endings kept); if any cannot be, none is and
    :class:`FixError` names each. A ``root`` that is a wheel / sdist / zip: ``[]``.
    """
    root = Path(root)
    if root.is_file() and is_archive(root):
        return []
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        if f.rule in FIXABLE_RULES and f.path in result.locations:
            by_path[f.path].append(f)
    diffs: list[str] = []
    rewrites: list[_Rewrite] = []
    refused: list[str] = []
    for rel, findings in sorted(by_path.items()):
        location = result.locations[rel]
        if location is None:
            refused.append(f"{rel}: reached through a symlink that leaves the audited directory")
            continue
        real = os.path.realpath(location)
        try:
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"not a regular file any more: {real}")
            with open(real, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            continue  # gone since the audit: nothing to fix
        except OSError as exc:
            refused.append(f"{rel}: cannot read: {exc.strerror or exc}")
            continue
        before = decode(rel, data)
        if before.text is None:
            continue  # the audit reported it
        after = fix_source(before.text, findings, config)
        if after == before.text:
            continue
        try:
            new = after.encode(before.encoding)
        except UnicodeEncodeError as exc:
            refused.append(f"{rel}: the fix cannot be written in the file's encoding {before.encoding}: {exc.reason}")
            continue
        diffs.append(
            "".join(
                difflib.unified_diff(
                    before.text.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    fromfile=f"a/{rel}",
                    tofile=f"b/{rel}",
                )
            )
        )
        rewrites.append(_Rewrite(rel, real, data, new, st))
    if write:
        if refused:
            raise FixError(f"--fix wrote nothing: {'; '.join(refused)}")
        _write_all(rewrites)
    return diffs


__all__ = ["FIXABLE_RULES", "FixError", "apply_fixes", "fix_source"]
