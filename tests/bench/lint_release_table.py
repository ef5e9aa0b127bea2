"""``fmha-guard audit`` over every published SGLang and vLLM release: a per-release table.

    python -m tests.bench.lint_release_table [--corpus DIR] [--engines sglang,vllm]
        [--releases 0.5.9,0.34.0] [--strict | --select CODES] [--jobs N] [--findings FILE]

A script, not a test. For each release (default: SGLang 0.5.9 ... 0.5.23 and vLLM
0.10.0 ... 0.34.0, :data:`RELEASES`) it runs, as a subprocess, ``python -m fmha_guard audit
--output-format json --no-cache --exit-zero --select <rules>`` on SGLang's ``sglang/srt``
tree or vLLM's ``vllm/`` tree, and prints one row: release, files (``.py`` files the audit
scanned), parsed (files past the rules' keyword pre-filter ``LintRule.wants``, counted
in-process on the same files), findings per rule, errors, and the audit's wall time
(interpreter start included; ``--jobs`` worker processes, default the CPU count).

The rules: every default-enabled rule; ``--strict`` adds the opt-in strict ones (GR101,
GR102, ...); ``--select`` names them instead. Trees: ``--corpus DIR`` reads already-extracted
``DIR/<engine>-<ver>/<engine>/...`` (e.g. ``/work/corpus``); without it each release's
``.py`` tree is fetched once into ``.cache/`` (:mod:`tests.lint_history.release_sources`:
SGLang wheels kept, vLLM's ~400 MB wheels deleted once their ``.py`` files are out).

``--findings FILE`` writes every finding as JSON, deduplicated across releases: one record
per (engine, file, function, rule, message) with the releases it appears in and its line
in each; the input for the per-finding verdicts (``releases | file:function | TP/FP``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: published releases the table covers by default, oldest first
RELEASES: dict[str, tuple[str, ...]] = {
    "sglang": tuple(f"0.5.{n}" for n in range(9, 24)),
    "vllm": (
        "0.10.0", "0.10.1", "0.10.2", "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0", "0.14.0", "0.14.1",
        "0.15.0", "0.15.1", "0.16.0", "0.17.0", "0.17.1", "0.18.0", "0.18.1", "0.19.0", "0.19.1", "0.20.0",
        "0.20.1", "0.20.2", "0.21.0", "0.22.0", "0.22.1", "0.23.0", "0.24.0", "0.25.0", "0.25.1", "0.26.0",
        "0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0",
    ),
}
#: the tree audited inside each engine's package
AUDITED = {"sglang": "sglang/srt", "vllm": "vllm"}


def release_root(engine: str, version: str, corpus: Path | None) -> Path | None:
    """The directory holding ``<engine>/`` for this release, or ``None`` when unavailable."""
    if corpus is not None:
        tree = corpus / f"{engine}-{version}"
        return tree if (tree / engine).is_dir() else None
    from tests.lint_history.release_sources import ReleaseUnavailable, release_tree

    try:
        return release_tree(engine, version)
    except ReleaseUnavailable as exc:
        print(f"# {engine} {version}: {exc}", file=sys.stderr)
        return None


def chosen_rules(select: str | None, strict: bool) -> list[str]:
    from lint_rules.registry import ALL_RULES, find_rule

    if select:
        return [find_rule(code.strip()).CODE for code in select.split(",") if code.strip()]
    return [r.CODE for r in ALL_RULES if strict or r.DEFAULT_ENABLED]


def parsed_count(target: Path, codes: list[str]) -> int:
    """Files under ``target`` that at least one of ``codes`` would parse (its ``wants``)."""
    from lint_rules import LintConfig, find_rule
    from lint_rules.sources import decode, iter_source_files

    rules = [find_rule(c)(LintConfig()) for c in codes]
    count = 0
    for src in iter_source_files(target):
        if src.error is not None:
            continue
        text = decode(src.path, src.read()).text
        if text is not None and any(r.wants(text) for r in rules):
            count += 1
    return count


def audit(target: Path, codes: list[str], jobs: int | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "fmha_guard", "audit", "--output-format", "json", "--no-cache", "--exit-zero",
           "--select", ",".join(codes)]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, str(target)], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {target} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="directory of extracted <engine>-<ver>/ trees")
    parser.add_argument("--engines", default="sglang,vllm")
    parser.add_argument("--releases", help="comma-separated versions to keep (default: all of RELEASES)")
    parser.add_argument("--strict", action="store_true", help="add the opt-in strict rules")
    parser.add_argument("--select", help="comma-separated rule codes (instead of the default rules)")
    parser.add_argument("--jobs", type=int, help="fmha-guard audit --jobs (default: its own, the CPU count)")
    parser.add_argument("--findings", type=Path, help="write the deduplicated findings here as JSON")
    args = parser.parse_args(argv)

    codes = chosen_rules(args.select, args.strict)
    keep = set(args.releases.split(",")) if args.releases else None
    dedup: dict[tuple[str, str, str, str, str], dict] = {}
    header = ["engine", "release", "files", "parsed", *codes, "other", "errors", "wall_s"]
    print(" ".join(f"{h:>8}" for h in header))
    totals: dict[str, int] = defaultdict(int)
    total_wall = 0.0
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        for version in RELEASES[engine]:
            if keep is not None and version not in keep:
                continue
            root = release_root(engine, version, args.corpus)
            if root is None:
                print(f"{engine:>8} {version:>8}  unavailable")
                continue
            target = root / AUDITED[engine]
            report, wall = audit(target, codes, args.jobs)
            parsed = parsed_count(target, codes)
            per_rule = {c: 0 for c in codes}
            for f in report["findings"]:
                # "other": GR900 / GR901, the suppression-comment checks
                column = f["rule"] if f["rule"] in per_rule else "other"
                per_rule[column] = per_rule.get(column, 0) + 1
                path = f"{AUDITED[engine]}/{f['path']}"
                key = (engine, path, f["symbol"], f["rule"], f["message"])
                rec = dedup.setdefault(key, {
                    "engine": engine, "file": path, "function": f["symbol"], "rule": f["rule"],
                    "message": f["message"], "releases": [], "lines": {}, "evidence": f.get("evidence", []),
                })
                rec["releases"].append(version)
                rec["lines"][version] = f["line"]
                totals[f["rule"]] += 1
            total_wall += wall
            row = [engine, version, report["files_scanned"], parsed, *(per_rule.get(c, 0) for c in codes),
                   per_rule.get("other", 0), len(report["errors"]), f"{wall:.2f}"]
            print(" ".join(f"{str(v):>8}" for v in row), flush=True)
            for err in report["errors"][:5]:
                print(f"#   error {err}", file=sys.stderr)
    print(f"# total findings: {dict(totals)}; distinct (file, function, rule, message): {len(dedup)}; "
          f"audit wall {total_wall:.1f} s; rules {','.join(codes)}; jobs {args.jobs or os.cpu_count()}")
    by_rule: dict[str, int] = defaultdict(int)
    for key in dedup:
        by_rule[key[3]] += 1
    print(f"# distinct findings per rule: {dict(sorted(by_rule.items()))}")
    if args.findings is not None:
        records = sorted(dedup.values(), key=lambda r: (r["rule"], r["engine"], r["file"], r["function"], r["message"]))
        args.findings.write_text(json.dumps(records, indent=1) + "\n")
        print(f"# {len(records)} distinct findings written to {args.findings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
