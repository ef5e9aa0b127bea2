"""Throughput of ``fmha-guard`` on SGLang 0.5.23's ``srt/`` tree, side by side with semgrep.

    python -m tests.bench.lint_throughput [--repeat 3] [--version 0.5.23] [--no-semgrep]

A script, not a test. In one run, on the same extracted tree, it times (wall clock,
interpreter start included for every command line):

* ``fmha-guard audit`` cold (no cache: ``--no-cache``, or a fresh ``--cache-dir``) and
  warm (the same ``--cache-dir`` again), if this build has the cache flags
  (``fmha-guard audit --help``); otherwise warm is reported as unavailable;
* the floor: ``libcst.parse_module`` in one process over exactly the files the audit
  parses (the rules' own keyword pre-filter, ``LintRule.wants``, picks them), and that
  floor divided by the CPU count (what perfect parallel parsing would cost);
* semgrep with equivalent YAML rules (GR001 as a taint rule from
  ``forward_batch.batch_size`` into a kernel call's arguments in a backend's forward
  method; GR002 as a taint rule from ``model_runner.token_to_kv_pool`` into a ``self.``
  attribute in ``__init__``), installed in a scratch virtualenv ``.cache/semgrep-venv``
  (``python -m venv`` + ``pip install semgrep``), run with ``--metrics=off`` and as many
  jobs as CPUs;
* a pre-commit-like run: ``fmha-guard lint`` on 5 attention-backend files (the worst
  case: all five pass the pre-filter and are large) with ``--no-cache`` (a changed file is
  never in the cache), the same with a warm ``--cache-dir``, and on 5 files the
  pre-filter skips (the common commit).

Each timing is the median of ``--repeat`` runs (min shown too). Targets (issue #5, on the
2-core machine): audit cold no slower than semgrep, warm < 1 s, lint on 5 files < 1.5 s.

The wheel is downloaded with ``pip download`` into ``.cache/wheels`` (git-ignored) and
``sglang/srt`` extracted into a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
WHEELS = CACHE / "wheels"
SEMGREP_VENV = CACHE / "semgrep-venv"

#: Five backends a pre-commit run might see changed together.
LINT_FILES = (
    "layers/attention/trtllm_mha_backend.py",
    "layers/attention/trtllm_mla_backend.py",
    "layers/attention/flashinfer_backend.py",
    "layers/attention/flashattention_backend.py",
    "layers/attention/triton_backend.py",
)

KERNELS = (
    "trtllm_batch_context_with_kv_cache|trtllm_batch_decode_with_kv_cache|trtllm_batch_decode_with_kv_cache_mla"
    "|trtllm_ragged_attention_deepseek|trtllm_fmha_v2_prefill|xqa|xqa_mla|xqa_batch_decode_with_kv_cache"
    "|xqa_batch_decode_with_kv_cache_mla|cutlass_mla_decode|flash_attn_with_kvcache|flash_attn_varlen_func"
    "|flash_mla_with_kvcache|flash_mla_sparse_fwd|_flash_mla_with_kvcache|unified_attention"
    "|unified_attention_3d_mtp_decode_func|unified_attention_3d_mtp_ragged_func|mha_batch_prefill_func"
    "|flash_attn_varlen_fp8_pertensor_func|mla_decode_fwd|mla_prefill_fwd|paged_attention_ragged|pa_decode_gluon"
    "|extend_attention_fwd|extend_attention_fwd_unified|decode_attention_fwd|attention_decode_fp8"
    "|attention_decode_bf16|_run_\\w*_kernel|_launch_\\w*_kernel"
)

#: semgrep pattern-list items: the match lies inside an attention-backend class (its name
#: or a base name says Backend / AttentionImpl), as the rules' ``is_backend_class``.
IN_BACKEND_CLASS = textwrap.dedent(
    r"""
    - pattern-either:
        - pattern-inside: |
            class $CLS(...):
              ...
        - pattern-inside: |
            class $CLS:
              ...
    - metavariable-regex:
        metavariable: $CLS
        regex: (?i).*(backend|attentionimpl|attnimpl).*
    """
).strip("\n")

SEMGREP_RULES = textwrap.dedent(
    r"""
    rules:
      - id: GR001-padded-batch-size-in-kernel-call
        mode: taint
        languages: [python]
        severity: ERROR
        message: "DP-padded forward_batch.batch_size reaches an FMHA kernel (SGLang #21649)"
        pattern-sources:
          - patterns:
              - pattern: $FB.batch_size
              - metavariable-regex:
                  metavariable: $FB
                  regex: ^forward_batch$
        pattern-sanitizers:
          - pattern: $A < $B
          - pattern: $A <= $B
          - pattern: $A > $B
          - pattern: $A >= $B
          - pattern: $A == $B
        pattern-sinks:
          - patterns:
              __IN_BACKEND_CLASS__
              - pattern-inside: |
                  def $METHOD(...):
                    ...
              - metavariable-regex:
                  metavariable: $METHOD
                  regex: ^_?forward(_\w*)?$
              - pattern-inside: $KERNEL(...)
              - metavariable-regex:
                  metavariable: $KERNEL
                  regex: ^(.*\.)?(__KERNELS__)$
      - id: GR002-stale-kv-pool-state
        mode: taint
        languages: [python]
        severity: ERROR
        message: "__init__ caches state of the swappable KV pool (SGLang #26966)"
        pattern-sources:
          - pattern: $MR.token_to_kv_pool
        pattern-sanitizers:
          - patterns:
              - pattern: $P.$FACT
              - metavariable-regex:
                  metavariable: $FACT
                  regex: ^(dtype|\w*_dtype|\w*_fp8|store_dtype|head_num|head_dim|v_head_dim|kv_lora_rank|qk_rope_head_dim|page_size|device|kv_cache_dim|\w*layout\w*|\w*vec5d\w*|\w*interleaved\w*|\w*quant_method\w*|present_ratios|get_v_head_dim|get_head_dim|layer_num|start_layer|end_layer)$
        pattern-sinks:
          - patterns:
              __IN_BACKEND_CLASS__
              - pattern-inside: |
                  def __init__(...):
                    ...
              - pattern-inside: self.$ATTR = $VALUE
              - pattern-not-inside: self.token_to_kv_pool = $MR.token_to_kv_pool
              - pattern: $VALUE
    """
).replace("__KERNELS__", KERNELS).replace("__IN_BACKEND_CLASS__", textwrap.indent(IN_BACKEND_CLASS, " " * 10).lstrip())


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def timed(cmd: list[str], repeat: int, setup=None, ok=(0, 1), env=None) -> tuple[list[float], subprocess.CompletedProcess[str]]:
    """Wall times of ``cmd`` (``setup()`` before each run, not timed); the last process."""
    times = []
    proc = None
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        proc = sh(cmd, env=env)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    assert proc is not None
    return times, proc


def fmt(times: list[float] | None) -> str:
    if not times:
        return "n/a"
    return f"{statistics.median(times):7.3f} s (min {min(times):.3f}, n={len(times)})"


def med(times: list[float] | None) -> float | None:
    return statistics.median(times) if times else None


def wheel(version: str) -> Path:
    WHEELS.mkdir(parents=True, exist_ok=True)
    found = sorted(WHEELS.glob(f"sglang-{version}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(WHEELS),
             f"sglang=={version}"],
            check=True,
        )
        found = sorted(WHEELS.glob(f"sglang-{version}-*.whl"))
    return found[0]


def extract_srt(whl: Path, dest: Path) -> Path:
    with zipfile.ZipFile(whl) as archive:
        for name in archive.namelist():
            if name.startswith("sglang/srt/") and not name.endswith("/"):
                archive.extract(name, dest)
    return dest / "sglang" / "srt"


def parsed_files(srt: Path) -> tuple[int, list[tuple[Path, str]]]:
    """All ``.py`` files, and those the audit parses: the default rules' ``wants`` filter."""
    from lint_rules import load_config, select_rules

    config = load_config(srt)
    rules = [r(config) for r in select_rules()]
    every = sorted(p for p in srt.rglob("*.py") if p.is_file())
    chosen = []
    for path in every:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if any(r.wants(text) for r in rules):
            chosen.append((path, text))
    return len(every), chosen


def parse_floor(files: list[tuple[Path, str]], repeat: int) -> list[float]:
    import libcst as cst

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _, text in files:
            try:
                cst.parse_module(text)
            except Exception:
                pass
        times.append(time.perf_counter() - start)
    return times


def semgrep_binary(log: list[str]) -> Path | None:
    exe = SEMGREP_VENV / "bin" / "semgrep"
    if not exe.exists():
        log.append(f"creating {SEMGREP_VENV} and installing semgrep")
        made = sh([sys.executable, "-m", "venv", str(SEMGREP_VENV)])
        if made.returncode != 0:
            log.append(f"python -m venv failed: {made.stderr.strip()[-500:]}")
            return None
        pip = sh([str(SEMGREP_VENV / "bin" / "pip"), "install", "-q", "semgrep"])
        if pip.returncode != 0:
            log.append(f"pip install semgrep failed: {pip.stderr.strip()[-1000:]}")
            return None
    version = sh([str(exe), "--version"])
    if version.returncode != 0:
        log.append(f"semgrep --version failed: {version.stderr.strip()[-1000:]}")
        return None
    log.append(f"semgrep {version.stdout.strip()}")
    return exe


def audit_flags() -> set[str]:
    out = sh(["fmha-guard", "audit", "--help"]).stdout
    return {flag for flag in ("--no-cache", "--cache-dir") if flag in out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="0.5.23", help="sglang version (default 0.5.23)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-semgrep", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("fmha-guard") is None:
        print("fmha-guard is not on PATH: pip install -e . first", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    log: list[str] = [f"python {sys.version.split()[0]}, {cpus} CPUs"]
    whl = wheel(args.version)
    results: dict[str, list[float] | None] = {}
    with tempfile.TemporaryDirectory(prefix="lint-throughput-") as tmp:
        tmp_path = Path(tmp)
        srt = extract_srt(whl, tmp_path / "tree")
        total, chosen = parsed_files(srt)
        lines = sum(t.count("\n") for _, t in chosen)
        log.append(f"{whl.name}: sglang/srt has {total} .py files; the pre-filter parses {len(chosen)} ({lines} lines)")

        # -- fmha-guard audit, cold and warm -------------------------------------------------
        flags = audit_flags()
        base = ["fmha-guard", "audit", "--format", "json", str(srt)]
        cache_dir = tmp_path / "fmha-cache"

        def fresh_cache() -> None:
            shutil.rmtree(cache_dir, ignore_errors=True)

        if "--cache-dir" in flags:
            cold_cmd = [*base, "--cache-dir", str(cache_dir)]
            results["audit cold"], proc = timed(cold_cmd, args.repeat, setup=fresh_cache)
            results["audit warm"], _ = timed(cold_cmd, args.repeat)
            log.append("audit cold: a fresh --cache-dir each run; warm: the same --cache-dir again")
        elif "--no-cache" in flags:
            results["audit cold"], proc = timed([*base, "--no-cache"], args.repeat)
            timed(base, 1)  # prime the default cache
            results["audit warm"], _ = timed(base, args.repeat)
            log.append("audit cold: --no-cache; warm: the default cache, primed once")
        else:
            results["audit cold"], proc = timed(base, args.repeat)
            results["audit warm"] = None
            log.append("audit warm: n/a (this fmha-guard has no --cache-dir / --no-cache; no cache yet)")
        report = json.loads(proc.stdout)
        by_rule: dict[str, int] = {}
        for f in report["findings"]:
            by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + 1
        log.append(
            f"audit: {report['files_scanned']} files scanned, findings {by_rule or '{}'}, "
            f"{len(report['errors'])} file errors"
        )

        # -- parse floor ------------------------------------------------------------------------
        results["parse floor (1 process)"] = parse_floor(chosen, args.repeat)
        results["parse floor / CPUs"] = [t / cpus for t in results["parse floor (1 process)"]]

        # -- semgrep ------------------------------------------------------------------------------
        results["semgrep"] = None
        exe = None if args.no_semgrep else semgrep_binary(log)
        if exe is not None:
            rules = tmp_path / "rules.yaml"
            rules.write_text(SEMGREP_RULES)
            env = dict(os.environ, SEMGREP_ENABLE_VERSION_CHECK="0", SEMGREP_SEND_METRICS="off")
            cmd = [str(exe), "scan", "--config", str(rules), "--json", "--metrics=off", "--disable-version-check",
                   "--no-git-ignore", "--jobs", str(cpus), "--timeout", "0", "--quiet", str(srt)]
            try:
                results["semgrep"], sg = timed(cmd, args.repeat, env=env)
                out = json.loads(sg.stdout)
                sg_rules: dict[str, int] = {}
                for r in out.get("results", []):
                    key = r["check_id"].split(".")[-1][:5]
                    sg_rules[key] = sg_rules.get(key, 0) + 1
                log.append(f"semgrep: findings {sg_rules or '{}'}, {len(out.get('errors', []))} errors")
            except (RuntimeError, json.JSONDecodeError) as exc:
                log.append(f"semgrep could not run: {exc}")

        # -- pre-commit-like lint -----------------------------------------------------------
        files = [str(srt / f) for f in LINT_FILES if (srt / f).is_file()]
        lint_flags = sh(["fmha-guard", "lint", "--help"]).stdout
        lint_cmd = ["fmha-guard", "lint", *(["--no-cache"] if "--no-cache" in lint_flags else []), *files]
        # changed files are not in any cache: this is the pre-commit number
        results[f"lint {len(files)} files"], _ = timed(lint_cmd, args.repeat)
        if "--no-cache" in lint_flags:
            warm_cmd = ["fmha-guard", "lint", "--cache-dir", str(tmp_path / "lint-cache"), *files]
            timed(warm_cmd, 1)
            results[f"lint {len(files)} files, cached"], _ = timed(warm_cmd, args.repeat)
        plain = sorted({p for p in srt.rglob("*.py")} - {p for p, _ in chosen})[:: max(1, total // 5)][:5]
        results["lint 5 non-backend files"], _ = timed(
            ["fmha-guard", "lint", *(["--no-cache"] if "--no-cache" in lint_flags else []), *map(str, plain)],
            args.repeat,
        )
        results["python -c pass"], _ = timed([sys.executable, "-c", "pass"], args.repeat)

    print("\n".join(log))
    print()
    width = max(len(k) for k in results)
    for name, times in results.items():
        print(f"{name:<{width}}  {fmt(times)}")
    print()
    cold, warm, floor, sg = (med(results[k]) for k in ("audit cold", "audit warm", "parse floor (1 process)", "semgrep"))
    lint = med(results[f"lint {len(files)} files"])
    assert cold is not None and floor is not None and lint is not None
    if sg:
        print(f"audit cold / semgrep           = {cold / sg:5.2f}   (target <= 1)")
    else:
        print("audit cold / semgrep           =   n/a (semgrep did not run)")
    print(f"audit cold / parse floor       = {cold / floor:5.2f}   (parse floor / CPUs: {floor / cpus:.3f} s)")
    if warm is not None:
        print(f"audit warm / audit cold        = {warm / cold:5.2f}   (warm {warm:.3f} s, target < 1 s)")
    else:
        print("audit warm                     =   n/a (no cache flags in this build)")
    print(f"lint {len(files)} files                   = {lint:.3f} s (target < 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
