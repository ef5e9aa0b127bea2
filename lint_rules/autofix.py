"""Autofix for GR001 (SGLang #21649): take the kernel's batch size from the metadata it reads.

Only one shape of finding is fixed: a kernel call flagged by GR001 that passes
``batch_size=<padded expr>`` *and* ``cum_seq_lens_q=X`` (the trtllm context / ragged
kernels). The value of ``batch_size`` becomes ``X.shape[0] - 1``, with ``X`` exactly as
written in the call (``self.forward_metadata.cu_seqlens_q``): the number of requests
the kernel's own offsets describe. Everything else is left to a person.

The edit is a libcst transformation of the argument's value only: the keyword, the
comma, trailing comments and the rest of the file are kept byte for byte. A candidate
fix is kept only if re-linting the fixed source shows no GR001 finding left in that
call (when another argument is padded too, or ``X`` itself is derived from the padded
size, the call is left unchanged). Nothing is ever interactive.

:func:`apply_fixes` works on the files of an :class:`~lint_rules.engine.AuditResult`
under a directory root; findings read from a wheel or an sdist are never fixed (an
archive is not edited in place, and no diff is produced for it).
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
from .rule import Finding
from .sources import ARCHIVE_SUFFIXES

if TYPE_CHECKING:
    from .engine import AuditResult

FIXED_RULE = "GR001"
SIZE_KEYWORD = "batch_size"
OFFSETS_KEYWORD = "cum_seq_lens_q"

#: Expressions that may take ``.shape`` without parentheses.
_PRIMARY = (cst.Name, cst.Attribute, cst.Subscript, cst.Call)


def _keyword_arg(call: cst.Call, keyword: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg
    return None


def _size_from_offsets(offsets: cst.BaseExpression) -> cst.BaseExpression:
    """``offsets.shape[0] - 1``, with ``offsets`` as written (parenthesized if it must be)."""
    base = offsets.deep_clone()
    if not isinstance(base, _PRIMARY) and not base.lpar:
        base = base.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    shape0 = cst.Subscript(
        value=cst.Attribute(value=base, attr=cst.Name("shape")),
        slice=[cst.SubscriptElement(slice=cst.Index(value=cst.Integer("0")))],
    )
    return cst.BinaryOperation(left=shape0, operator=cst.Subtract(), right=cst.Integer("1"))


def _fixable(call: cst.Call) -> bool:
    size, offsets = _keyword_arg(call, SIZE_KEYWORD), _keyword_arg(call, OFFSETS_KEYWORD)
    if size is None or offsets is None:
        return False
    # already the fixed form: nothing to do
    return not size.value.deep_equals(_size_from_offsets(offsets.value))


class _Locate(cst.CSTVisitor):
    """Calls that have an argument starting at one of the finding positions."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, positions: set[tuple[int, int]]) -> None:
        super().__init__()
        self.positions = positions
        self.calls: list[cst.Call] = []

    def visit_Call(self, call: cst.Call) -> None:
        for arg in call.args:
            start = self.get_metadata(PositionProvider, arg).start
            if (start.line, start.column + 1) in self.positions:
                self.calls.append(call)
                return


class _Rewrite(cst.CSTTransformer):
    """Replaces the ``batch_size`` value of the chosen calls; records the new call nodes."""

    def __init__(self, targets: Sequence[cst.Call]) -> None:
        super().__init__()
        self.targets = {id(c) for c in targets}
        self.rewritten: list[cst.Call] = []

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if id(original) not in self.targets:
            return updated
        offsets = _keyword_arg(updated, OFFSETS_KEYWORD)
        assert offsets is not None
        new_value = _size_from_offsets(offsets.value)
        args = [
            arg.with_changes(value=new_value) if arg.keyword is not None and arg.keyword.value == SIZE_KEYWORD else arg
            for arg in updated.args
        ]
        fixed = updated.with_changes(args=args)
        self.rewritten.append(fixed)
        return fixed


def _gr001_positions_in(source: str, module: cst.Module, calls: Sequence[cst.Call], config: LintConfig) -> list[bool]:
    """For each of ``calls`` (nodes of ``module``, the parse of ``source``): does a GR001
    finding of the re-linted source still fall inside it?"""
    from .engine import lint_source  # late: engine imports the rules
    from .registry import find_rule

    findings, _, _ = lint_source("<fixed>", source, [find_rule(FIXED_RULE)], config)
    spots = {(f.line, f.col) for f in findings if f.rule == FIXED_RULE}
    layout = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    still: list[bool] = []
    for call in calls:
        rng = layout[call]
        still.append(
            any(
                (rng.start.line, rng.start.column + 1) <= spot <= (rng.end.line, rng.end.column + 1)
                for spot in spots
            )
        )
    return still


def fix_source(source: str, findings: Iterable[Finding], config: LintConfig | None = None) -> str:
    """The source with GR001's ``batch_size`` fixed at the flagged calls; unchanged if none.

    ``findings`` are this file's findings (other rules are ignored). A call is fixed when
    one of its arguments is where a GR001 finding points, it passes both ``batch_size=``
    and ``cum_seq_lens_q=``, and after the edit GR001 no longer flags it.
    """
    config = config or LintConfig()
    positions = {(f.line, f.col) for f in findings if f.rule == FIXED_RULE}
    if not positions:
        return source
    try:
        module = cst.parse_module(source)
    except Exception:  # the audit already reported the parse error
        return source
    locate = _Locate(positions)
    MetadataWrapper(module, unsafe_skip_copy=True).visit(locate)
    targets = [c for c in locate.calls if _fixable(c)]
    # Keep only fixes that clear the call; dropping one never changes another's verdict
    # by more than its own argument, so at most len(targets) rounds, usually one.
    while targets:
        rewrite = _Rewrite(targets)
        fixed_module = module.visit(rewrite)
        by_original = dict(zip((id(c) for c in _in_source_order(module, targets)), rewrite.rewritten))
        fixed_code = fixed_module.code
        try:
            reparsed = cst.parse_module(fixed_code)
        except Exception:  # pragma: no cover - the edit always yields valid syntax
            return source
        new_calls = _matching_calls(reparsed, [by_original[id(c)] for c in targets])
        still = _gr001_positions_in(fixed_code, reparsed, new_calls, config)
        if not any(still):
            return fixed_code
        targets = [c for c, bad in zip(targets, still) if not bad]
    return source


def _in_source_order(module: cst.Module, calls: Sequence[cst.Call]) -> list[cst.Call]:
    """``calls`` in the order a transformer leaves them (post-order: inner calls first)."""
    wanted = {id(c) for c in calls}
    order: list[cst.Call] = []

    class _Order(cst.CSTVisitor):
        def leave_Call(self, call: cst.Call) -> None:
            if id(call) in wanted:
                order.append(call)

    module.visit(_Order())
    return order


def _matching_calls(module: cst.Module, rewritten: Sequence[cst.Call]) -> list[cst.Call]:
    """The nodes of a re-parsed module equal to each rewritten call (same order)."""
    found: list[cst.Call] = []
    remaining = list(rewritten)

    class _Find(cst.CSTVisitor):
        def leave_Call(self, call: cst.Call) -> None:
            if remaining and call.deep_equals(remaining[0]):
                found.append(call)
                remaining.pop(0)

    # the transformer recorded calls in post-order; walk the re-parse in post-order too
    module.visit(_Find())
    if remaining:  # pragma: no cover - a re-parse of the same code has the same nodes
        raise RuntimeError("autofix: a fixed call is missing from the re-parsed source")
    return found


def _is_archive(root: Path) -> bool:
    return root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES)


def apply_fixes(result: "AuditResult", root: Path, write: bool, config: LintConfig | None = None) -> list[str]:
    """Fix GR001 findings of ``result`` in the files under ``root``; one unified diff per
    changed file (``a/PATH`` / ``b/PATH``, paths relative to ``root`` as in the findings).

    Files are rewritten only when ``write`` is true (bytes as read, line endings kept).
    A ``root`` that is a wheel / sdist / zip is never touched: returns ``[]``. Findings
    whose file no longer exists are skipped.
    """
    root = Path(root)
    if _is_archive(root):
        return []
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        if f.rule == FIXED_RULE:
            by_path[f.path].append(f)
    diffs: list[str] = []
    for rel, findings in sorted(by_path.items()):
        file = root / rel
        if not file.is_file() or file.name.endswith(ARCHIVE_SUFFIXES):
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


__all__ = ["apply_fixes", "fix_source"]
