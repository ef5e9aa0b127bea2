"""Baseline files: accept today's findings, fail only on new ones.

A finding's key is its rule, path, symbol (``Class.method``) and a hash of its source
line's stripped text; the line number is left out, so code that moves (lines added
above it) stays baselined, while a changed line or a finding in another method is new.
Identical keys are counted: a baseline holding one ``GR001`` on a line accepts one
finding with that key, and a second, copied call is new.

A baseline is written only when asked (``--write-baseline FILE``: replaced atomically,
in a directory that must exist) and read with ``--baseline FILE``, which must exist: a
mistyped path is an error, never a fresh baseline that passes.

File format (JSON, sorted, meant to be committed)::

    {"tool": "fmha-guard", "version": 1,
     "findings": [{"rule": "GR001", "path": "...", "symbol": "C.forward_extend",
                   "line_hash": "9f1c...", "count": 1}]}
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .atomic_write import write_atomically
from .engine import AuditResult
from .finding import Finding

FORMAT_VERSION = 1
Key = tuple[str, str, str, str]


class BaselineError(ValueError):
    """A baseline file that cannot be read or written (the message names it)."""


def line_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def finding_key(finding: Finding, result: AuditResult) -> Key:
    text = result.lines.get((finding.path, finding.line), "")
    return (finding.rule, finding.path, finding.symbol, line_hash(text))


def write_baseline(path: Path, result: AuditResult) -> int:
    """Write ``result``'s findings to ``path`` (created or replaced atomically: a reader
    never sees half a baseline); the number written. The directory must exist: a
    mistyped path is a :class:`BaselineError`, never a new folder."""
    counts = Counter(finding_key(f, result) for f in result.findings)
    rows = [
        {"rule": r, "path": p, "symbol": s, "line_hash": h, "count": n}
        for (r, p, s, h), n in sorted(counts.items())
    ]
    if not path.parent.is_dir():
        raise BaselineError(f"{path}: cannot write the baseline: no such directory {path.parent}")
    if path.is_dir():
        raise BaselineError(f"{path}: cannot write the baseline: it is a directory")
    text = json.dumps({"tool": "fmha-guard", "version": FORMAT_VERSION, "findings": rows}, indent=2) + "\n"
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise BaselineError(f"{path}: cannot write the baseline: {exc.strerror or exc}") from None
    return len(result.findings)


#: Each row's keys, and the type its value must have.
ROW_KEYS = {"rule": str, "path": str, "symbol": str, "line_hash": str, "count": int}


def load_baseline(path: Path) -> Counter[Key]:
    """The baseline in ``path``; a :class:`BaselineError` naming the file and what is wrong
    with it (missing, unreadable, not JSON (with the position), a missing key)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file; write one with --write-baseline {path}") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: not a fmha-guard baseline: not UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: not a fmha-guard baseline: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise BaselineError(f"{path}: not a fmha-guard baseline: a JSON {type(data).__name__}, not an object")
    if data.get("version") != FORMAT_VERSION:
        raise BaselineError(f"{path}: unsupported baseline version {data.get('version')!r} (expected {FORMAT_VERSION})")
    rows = data.get("findings")
    if not isinstance(rows, list):
        raise BaselineError(f"{path}: not a fmha-guard baseline: 'findings' must be a list of objects")
    counts: Counter[Key] = Counter()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BaselineError(f"{path}: findings[{i}] is not an object")
        for key, kind in ROW_KEYS.items():
            if key not in row:
                raise BaselineError(f"{path}: findings[{i}] has no {key!r}")
            if not isinstance(row[key], kind) or isinstance(row[key], bool):
                raise BaselineError(f"{path}: findings[{i}].{key} must be a {kind.__name__}, not {row[key]!r}")
        counts[(row["rule"], row["path"], row["symbol"], row["line_hash"])] += row["count"]
    return counts


def filter_new(result: AuditResult, baseline: Counter[Key]) -> AuditResult:
    """Keep in ``result`` only the findings the baseline does not hold (in place)."""
    left = Counter(baseline)
    new: list[Finding] = []
    for f in result.findings:
        key = finding_key(f, result)
        if left[key] > 0:
            left[key] -= 1
        else:
            new.append(f)
    result.baselined += len(result.findings) - len(new)
    result.findings = new
    return result
