"""Suppression comments: ``# fmha-guard: ignore[GR001] reason``.

A suppression silences the listed rules for a finding on the comment's own line, or
for a finding anywhere in the statement whose first line carries the comment (a call
spread over several lines)::

    out = trtllm_batch_context_with_kv_cache(  # fmha-guard: ignore[GR001] sizes checked by caller
        query=q,
        batch_size=forward_batch.batch_size,
    )

``ignore[GR001,GR002]`` lists several codes; the text after ``]`` is the reason (free
text, encouraged). Comments are found with :mod:`tokenize`, so ``"# fmha-guard: ..."``
inside a string is not a suppression.

Two pseudo-rules report on the comments themselves (their classes, with their
documentation, are :mod:`lint_rules.gr900_unused_suppression` and
:mod:`lint_rules.gr901_invalid_suppression`; the checks are here); they run whenever a
real rule runs, appear in every output format like any finding, and are switched off
like any rule (``--ignore GR900``, config ``ignore``, ``per-path-ignores``):

- ``GR900 unused-suppression``: a listed code that suppressed nothing. Judged only for
  rules that ran on the file (a code of an unselected rule is left alone).
- ``GR901 invalid-suppression``: a bare ``# fmha-guard: ignore`` (codes are required,
  so that a blanket suppression cannot hide a new bug), an empty or malformed list,
  an unknown directive, or an unknown rule code. An invalid comment suppresses nothing.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from .finding import Finding
from .gr900_unused_suppression import UnusedSuppression
from .gr901_invalid_suppression import InvalidSuppression
from .rule_info import PseudoRule

UNUSED = UnusedSuppression.CODE
INVALID = InvalidSuppression.CODE

#: The pseudo-rules by code; their documentation lives with their classes.
PSEUDO_RULES: dict[str, type[PseudoRule]] = {rule.CODE: rule for rule in (UnusedSuppression, InvalidSuppression)}

#: Text a file must contain to hold a suppression comment at all.
MARKER = "fmha-guard"
_COMMENT = re.compile(r"#\s*fmha-guard\s*:\s*(?P<rest>.*)$")
_IGNORE = re.compile(r"ignore(?:\s*\[(?P<codes>[^\]]*)\])?(?P<tail>.*)$")
_CODE = re.compile(r"^[A-Za-z]+[0-9]+$")


@dataclass(frozen=True)
class Suppression:
    line: int
    col: int
    codes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class BadComment:
    line: int
    col: int
    problem: str


def parse_comments(text: str) -> tuple[list[Suppression], list[BadComment]]:
    """Every ``# fmha-guard:`` comment of ``text`` (tokenizer comments only)."""
    good: list[Suppression] = []
    bad: list[BadComment] = []
    if MARKER not in text:
        return good, bad
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return good, bad  # the file does not parse; that error is reported elsewhere
    for tok in tokens:
        if tok.type != tokenize.COMMENT or MARKER not in tok.string:
            continue
        match = _COMMENT.search(tok.string)
        if match is None:
            continue
        line, col = tok.start[0], tok.start[1] + match.start() + 1
        rest = match.group("rest").strip()
        directive = _IGNORE.match(rest)
        if directive is None:
            bad.append(BadComment(line, col, f"unknown directive {rest.split()[0] if rest else ''!r}; "
                                              "use '# fmha-guard: ignore[CODE] reason'"))
            continue
        tail = directive.group("tail")
        if directive.group("codes") is None:
            if tail.strip().startswith("["):
                bad.append(BadComment(line, col, "unclosed code list; use 'ignore[GR001,GR002]'"))
            elif tail and not tail[0].isspace():
                bad.append(BadComment(line, col, f"unknown directive {rest.split()[0]!r}; use 'ignore[CODE]'"))
            else:
                bad.append(BadComment(line, col, "a bare 'fmha-guard: ignore' is not accepted; "
                                                  "name the rules: 'ignore[GR001] reason'"))
            continue
        codes = [c.strip() for c in directive.group("codes").split(",") if c.strip()]
        if not codes:
            bad.append(BadComment(line, col, "empty code list; name the rules: 'ignore[GR001] reason'"))
            continue
        malformed = [c for c in codes if not _CODE.match(c)]
        if malformed:
            bad.append(BadComment(line, col, f"not a rule code: {', '.join(malformed)}"))
            continue
        good.append(Suppression(line, col, tuple(dict.fromkeys(c.upper() for c in codes)), tail.strip()))
    return good, bad


class _Layout:
    """Statement first lines and enclosing ``Class.method`` names, from :mod:`ast`."""

    def __init__(self, text: str) -> None:
        self.starts: dict[int, int] = {}
        self.scopes: list[tuple[int, int, str]] = []
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return
        self._visit(tree.body, "")

    def _visit(self, body: Sequence[ast.stmt], prefix: str) -> None:
        for stmt in body:
            children: list[ast.stmt] = []
            for name in ("body", "orelse", "finalbody"):
                children.extend(getattr(stmt, name, None) or [])
            for handler in getattr(stmt, "handlers", None) or []:
                children.extend(handler.body)
            for case in getattr(stmt, "cases", None) or []:
                children.extend(case.body)
            end = stmt.end_lineno or stmt.lineno
            if children:
                end = max(stmt.lineno, min(c.lineno for c in children) - 1)
            for line in range(stmt.lineno, end + 1):
                self.starts[line] = stmt.lineno
            inner = prefix
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{prefix}{stmt.name}"
                self.scopes.append((stmt.lineno, stmt.end_lineno or stmt.lineno, inner))
                inner += "."
            self._visit([c for c in children if isinstance(c, ast.stmt)], inner)

    def statement_start(self, line: int) -> int:
        return self.starts.get(line, line)

    def symbol(self, line: int) -> str:
        best = ""
        for start, end, name in self.scopes:
            if start <= line <= end and len(name) >= len(best):
                best = name
        return best or "<module>"


def apply_suppressions(
    path: str,
    text: str,
    findings: Iterable[Finding],
    judged: Collection[str],
    known: Collection[str],
    pseudo: Collection[str] = (UNUSED, INVALID),
) -> list[Finding]:
    """``findings`` minus the suppressed ones, plus GR900 / GR901 findings.

    ``judged``: codes of the rules that ran on this file (an unused suppression is
    reported only for those); ``known``: every real rule code; ``pseudo``: the
    pseudo-rules enabled for this file.
    """
    findings = list(findings)
    if MARKER not in text:
        return findings
    good, bad = parse_comments(text)
    if not good and not bad:
        return findings
    layout = _Layout(text)
    by_line: dict[int, list[Suppression]] = {}
    for sup in good:
        by_line.setdefault(sup.line, []).append(sup)
    used: set[tuple[int, str]] = set()
    kept: list[Finding] = []
    for f in findings:
        hit = False
        for line in {f.line, layout.statement_start(f.line)}:
            for sup in by_line.get(line, ()):
                if f.rule in sup.codes:
                    used.add((sup.line, f.rule))
                    hit = True
        if not hit:
            kept.append(f)
    out = kept

    def report(code: str, line: int, col: int, detail: str) -> None:
        rule = PSEUDO_RULES[code]
        out.append(Finding(path, line, col, code, rule.NAME, layout.symbol(line), f"{rule.MESSAGE} {detail}"))

    if INVALID in pseudo:
        for b in bad:
            report(INVALID, b.line, b.col, b.problem)
    for sup in good:
        for code in sup.codes:
            if code not in known:
                if INVALID in pseudo:
                    what = "a pseudo-rule cannot be suppressed" if code in PSEUDO_RULES else "unknown rule code"
                    report(INVALID, sup.line, sup.col, f"{what} {code}")
            elif UNUSED in pseudo and code in judged and (sup.line, code) not in used:
                report(UNUSED, sup.line, sup.col, f"{code} suppresses no finding here; remove it")
    return out
