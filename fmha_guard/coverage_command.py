"""``fmha-guard coverage PATH|WHEEL``: which FMHA call sites the installed runtime guard checks.

Lists every FMHA call site of a codebase (:func:`fmha_guard.call_sites.scan`: file:line,
the entry point it calls, how that was resolved) and whether the guard checks it, from
the entry points it patches (:data:`runtime_checks.kernel_specs.ENTRY_POINTS`) and the
kernel list (:mod:`fmha_guard.fmha_kernels`):

* a kernel function is checked when an entry point patches it (re-exports are one
  kernel: ``flashinfer.trtllm_batch_decode_with_kv_cache`` is ``flashinfer.decode``'s);
* a wrapper method when the entry point of what it reaches patches it (an alias such as
  ``begin_forward = plan`` only when that entry point lists it;
  ``forward`` calls ``run``); a method-name match only when every candidate class is;
* a helper or an engine interface (SGLang's ``sglang.kernels.ops.attention.flash_attention``)
  when it is patched itself, or when every kernel its body calls directly is checked.

Ends with ``N of M FMHA call sites checked (P%)``. ``--include PREFIX`` (repeatable) lists
only the call sites under a path of the target (``sglang/srt/layers/attention/``);
``--show unchecked`` prints only those; ``--format json`` prints
``{"target", "include", "files_scanned", "summary": {"call_sites", "checked", "percent"},
"call_sites": [{"path", "line", "col", "symbol", "callee", "target", "resolution",
"kernels", "checked", "checked_by", "reason", "via"}], "kernels": [{"kernel",
"call_sites", "checked", "checked_by"}], "entry_points", "errors": [{"path", "message"}]}``.

Exit status: 0; 1 with ``--fail-under PCT`` when fewer than PCT percent are checked (as
coverage.py's ``--fail-under``); 2 usage or internal error. Computing coverage imports
neither torch nor FlashInfer (nor the audited code).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exit_status import EXIT_CLEAN, EXIT_FINDINGS, UsageError

__all__ = ["add_coverage_parser", "run_coverage", "SiteCoverage", "Coverage", "coverage_of"]


@dataclass(frozen=True)
class SiteCoverage:
    """One call site and whether the guard checks it: ``checked_by`` the entry points that do
    (one per kernel reached), ``reason`` why not."""

    site: Any  # fmha_guard.call_sites.CallSite
    checked: bool
    checked_by: tuple[str, ...] = ()
    reason: str = ""
    #: (kernel key, the entry point checking it or None), per kernel reached
    per_kernel: tuple[tuple[str, str | None], ...] = ()


@dataclass
class Coverage:
    target: str
    include: tuple[str, ...]
    files_scanned: int
    sites: list[SiteCoverage] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    entry_points: tuple[str, ...] = ()

    @property
    def checked(self) -> int:
        return sum(s.checked for s in self.sites)

    @property
    def percent(self) -> float:
        return 100.0 if not self.sites else 100.0 * self.checked / len(self.sites)

    def summary(self) -> str:
        if not self.sites:
            return "no FMHA call sites found (100%)"
        return f"{self.checked} of {len(self.sites)} FMHA call sites checked ({self.percent:.1f}%)"


def _kernel_checked(kernel: Any, guarded: Mapping[str, str], interfaces: Mapping[str, tuple]) -> tuple[str | None, str]:
    """(the entry point checking ``kernel``, or None; why not)."""
    from .fmha_kernels import method_checked

    if kernel.wrapper and kernel.method is not None:
        entry = method_checked(kernel.name, kernel.method, guarded)
        return entry, "" if entry else f"no entry point patches {kernel.name}.{kernel.method} (or what it calls)"
    entry = guarded.get(kernel.key)
    if entry is not None:
        return entry, ""
    if kernel.interface:
        inner = interfaces.get(kernel.key, ())
        if inner:
            entries = [guarded.get(k.key) for k in inner]
            if all(entries):
                return " + ".join(dict.fromkeys(e for e in entries if e)), ""
            missing = ", ".join(k.key for k, e in zip(inner, entries) if not e)
            return None, f"no entry point patches {kernel.key}, nor {missing} that it calls"
        return None, f"no entry point patches {kernel.key} (its body reaches no known kernel directly)"
    return None, f"no entry point patches {kernel.key}"


def coverage_of(scan: Any, entry_points: Iterable[Any], include: Sequence[str] = ()) -> Coverage:
    """Whether each call site of ``scan`` (:class:`fmha_guard.call_sites.Scan`) is checked
    by ``entry_points`` (``module`` / ``qualname`` / ``aliases``)."""
    from .fmha_kernels import guarded_keys

    entries = tuple(entry_points)
    guarded = guarded_keys(entries)
    result = Coverage(scan.target, tuple(include), scan.files_scanned, errors=list(scan.errors),
                      entry_points=tuple(f"{e.module}.{e.qualname}" for e in entries))
    for site in scan.sites:
        by, reasons = [], []
        for kernel in site.kernels:
            entry, reason = _kernel_checked(kernel, guarded, scan.interfaces)
            by.append(entry)
            if reason:
                reasons.append(reason)
        checked = bool(by) and all(by)
        if checked or site.resolution != "method name":
            reason = "; ".join(reasons)
        else:
            reason = f"matched by method name; candidates not all checked: {'; '.join(reasons)}"
        result.sites.append(SiteCoverage(site, checked, tuple(dict.fromkeys(b for b in by if b)),
                                         "" if checked else reason,
                                         tuple((k.key, b) for k, b in zip(site.kernels, by))))
    return result


# ---------------------------------------------------------------- command line


def add_coverage_parser(sub: argparse._SubParsersAction) -> None:
    """The ``coverage`` subcommand's arguments."""
    p = sub.add_parser("coverage", help="list the FMHA call sites of a codebase and whether the runtime guard checks them")
    p.add_argument("target", metavar="PATH|WHEEL", help="a directory, a .py file, a wheel or an sdist (read in place)")
    p.add_argument("--include", action="append", default=[], metavar="PREFIX",
                   help="list only call sites under this path of the target, or matching this glob (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--show", choices=("all", "unchecked"), default="all", help="which call sites the text lists")
    p.add_argument("--fail-under", type=float, default=None, metavar="PCT",
                   help="exit 1 when fewer than PCT percent of the call sites are checked")


def run_coverage(args: argparse.Namespace) -> int:
    from runtime_checks.kernel_specs import ENTRY_POINTS

    from .call_sites import scan

    target = Path(args.target)
    if not target.exists():
        raise UsageError(f"no such file or directory: {args.target}")
    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        raise UsageError(f"--fail-under takes a percentage (0-100), not {args.fail_under}")
    result = coverage_of(scan(target, args.include, display=args.target), ENTRY_POINTS, args.include)
    if args.format == "json":
        print(json.dumps(as_json(result), indent=1))
    else:
        print_text(result, args.show)
    if args.fail_under is not None and result.percent < args.fail_under:
        print(f"fmha-guard: coverage {result.percent:.1f}% is under --fail-under {args.fail_under:g}%", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _kernel_rows(result: Coverage) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for sc in result.sites:
        for key, entry in sc.per_kernel:
            row = rows.setdefault(key, {"kernel": key, "call_sites": 0, "checked": 0, "checked_by": []})
            row["call_sites"] += 1
            row["checked"] += sc.checked
            if entry and entry not in row["checked_by"]:
                row["checked_by"].append(entry)
    return sorted(rows.values(), key=lambda r: r["kernel"])


def as_json(result: Coverage) -> dict[str, Any]:
    return {
        "target": result.target,
        "include": list(result.include),
        "files_scanned": result.files_scanned,
        "summary": {"call_sites": len(result.sites), "checked": result.checked, "percent": round(result.percent, 2)},
        "call_sites": [
            {"path": s.site.path, "line": s.site.line, "col": s.site.col, "symbol": s.site.symbol,
             "callee": s.site.callee, "target": s.site.target, "resolution": s.site.resolution,
             "kernels": [k.key for k in s.site.kernels], "checked": s.checked, "checked_by": list(s.checked_by),
             "reason": s.reason, "via": list(s.site.via)}
            for s in result.sites
        ],
        "kernels": _kernel_rows(result),
        "entry_points": list(result.entry_points),
        "errors": [{"path": p, "message": m} for p, m in result.errors],
    }


def print_text(result: Coverage, show: str = "all", out: Any = None) -> None:
    """One line per call site (``path:line:col: checked|NOT CHECKED callee -> target``), a
    per-kernel table, the summary line last."""
    out = out or sys.stdout
    scope = f" (call sites under {', '.join(result.include)})" if result.include else ""
    print(f"FMHA call sites in {result.target}{scope}, {result.files_scanned} files scanned:", file=out)
    for sc in result.sites:
        if show == "unchecked" and sc.checked:
            continue
        s = sc.site
        how = ("by " if s.resolution == "method name" else "") + s.resolution + (f" via {', '.join(s.via)}" if s.via else "")
        status = f"checked by {', '.join(sc.checked_by)}" if sc.checked else f"NOT CHECKED: {sc.reason}"
        print(f"{s.path}:{s.line}:{s.col}: {s.callee} -> {s.target} [{how}] in {s.symbol}: {status}", file=out)
    rows = _kernel_rows(result)
    if rows:
        print("\nper kernel (call sites checked / found):", file=out)
        width = max(len(r["kernel"]) for r in rows)
        for r in rows:
            by = ", ".join(r["checked_by"]) or "-"
            print(f"  {r['kernel']:<{width}}  {r['checked']:>3} / {r['call_sites']:<3}  {by}", file=out)
    for path, message in result.errors:
        print(f"error: {path}: {message}", file=out)
    print(result.summary(), file=out)
