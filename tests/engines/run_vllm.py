"""Run a published vLLM's real attention backends on CPU and print what they launch.

    python -m tests.engines.run_vllm --version 0.34.0 [--inventory] [--backends A,B]
        [--batches decode,prefill] [--no-cudagraph] [--output report.json]

One vLLM version per process (``sys.modules`` holds one). The wheel is downloaded once
into ``.cache/wheels/``, its Python files extracted into ``.cache/engines/vllm-<ver>/``,
the small real dependencies installed into ``.cache/engines/site-py311-vllm/``.
``FMHA_GUARD=values`` (or ``shapes``) in the environment arms the runtime guard on the
FlashInfer entry points it patches; the report then carries its counters.

The JSON report: ``backends`` (per backend and batch kind: ok / error, the kernel calls
counted by entry point), ``calls`` (every recorded call: entry point, layer, arguments
with shapes / dtypes / devices / strides / storages, scalars), ``triton_launches``
(interpreted Triton kernels), ``stubs`` (what was stubbed and why), and with
``--inventory`` an ``inventory``: per backend, the entry points and argument forms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: real small dependencies vLLM imports at module level on the way to its attention
#: backends (everything else is a placeholder, see vllm_stubs.PLACEHOLDER_MODULES).
#: Own list (not engine_wheels.SUPPORT_REQUIREMENTS): vLLM 0.33/0.34 need transformers 5.
VLLM_SUPPORT_REQUIREMENTS = (
    "triton==3.9.0",
    "msgspec==0.22.0",
    "cloudpickle==3.1.2",
    "cachetools==8.0.0",
    "psutil==7.2.2",
    "blake3==1.0.11",
    "regex==2026.11.19",
    "pyzmq==27.3.0",
    "transformers==5.20.0",
    "huggingface_hub==2.4.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "typer==0.29.1",
    "shellingham==1.5.4",
    "httpx2==2.16.2",
    "httpcore2==2.16.2",
    "anyio==4.16.0",
    "h11==0.16.0",
    "truststore",
)


def vllm_support_site() -> Path:
    """``pip install --target`` the support packages into the cache, once."""
    import subprocess

    from tests.engines.engine_wheels import ENGINE_CACHE

    site = ENGINE_CACHE / f"site-py{sys.version_info.major}{sys.version_info.minor}-vllm"
    marker = site / ".complete"
    wanted = "\n".join(VLLM_SUPPORT_REQUIREMENTS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return site
    site.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
         "--only-binary=:all:", "--target", str(site), "--upgrade", *VLLM_SUPPORT_REQUIREMENTS],
        check=True,
    )
    marker.write_text(wanted)
    return site


def prepare(version: str) -> dict[str, float]:
    """Wheel, extraction, support site, ``sys.path`` and environment; timings."""
    from tests.engines.engine_wheels import extracted_engine, published_wheel

    timings = {}
    t = time.monotonic()
    published_wheel("vllm", version)
    timings["download_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    root = extracted_engine("vllm", version)
    timings["extract_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    site = vllm_support_site()
    timings["support_site_s"] = round(time.monotonic() - t, 2)
    sys.path[:0] = [str(root), str(site)]
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root.parent / "vllm-home"))
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # as if the flashinfer-cubin package were installed (production setting): enables the
    # trtllm-gen / xqa paths and skips the artifactory probe (no network here)
    os.environ.setdefault("VLLM_HAS_FLASHINFER_CUBIN", "1")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--inventory", action="store_true", help="add the per-backend inventory")
    parser.add_argument("--backends", default="", help="comma-separated BackendRun keys")
    parser.add_argument("--batches", default="decode,prefill,mixed,spec_decode")
    parser.add_argument("--no-cudagraph", action="store_true")
    parser.add_argument("--no-calls", action="store_true", help="leave the per-call list out")
    parser.add_argument("--output", default="", help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)

    started = time.monotonic()
    timings = prepare(args.version)
    from tests.engines import vllm_stubs

    t = time.monotonic()
    stubs = vllm_stubs.install()
    from tests.engines import vllm_entry_points, vllm_kit
    from tests.engines import vllm_recorders as rec

    guard = vllm_entry_points.arm_guard()
    vllm_entry_points.install()
    timings["import_s"] = round(time.monotonic() - t, 2)

    from tests.engines import import_stubs

    import_time_placeholder_calls = len(import_stubs.PLACEHOLDER_CALLS)
    wanted = [b for b in args.backends.split(",") if b]
    runs = [r for r in vllm_kit.BACKENDS if not wanted or r.key in wanted]
    batches = [b for b in args.batches.split(",") if b]
    results = {}
    for run in runs:
        t = time.monotonic()
        outcome = vllm_kit.run_backend(run, batches, cudagraph=not args.no_cudagraph)
        outcome["seconds"] = round(time.monotonic() - t, 2)
        results[run.key] = outcome
        print(f"[run_vllm {args.version}] {run.key}: "
              + ", ".join(f"{k}={'ok' if v.get('ok') else 'FAIL'}" for k, v in outcome["batches"].items())
              + (f" error={outcome['error']}" if "error" in outcome else "")
              + f" ({outcome['seconds']}s)", file=sys.stderr)
    timings["run_s"] = round(time.monotonic() - started - sum(timings.values()), 2)
    report = {
        "engine": "vllm",
        "version": args.version,
        "environment": vllm_kit.env_summary(),
        "timings": timings,
        "stubs": stubs,
        # placeholders called at import (module-level constants of unused subsystems) / by a run
        "placeholder_calls_at_import": sorted(set(import_stubs.PLACEHOLDER_CALLS[:import_time_placeholder_calls])),
        "placeholder_calls": sorted(set(import_stubs.PLACEHOLDER_CALLS[import_time_placeholder_calls:])),
        "backends": results,
        "guard": vllm_entry_points.guard_report(guard),
        "triton_launches": _triton_summary(rec.TRITON_LAUNCHES),
    }
    if not args.no_calls:
        report["calls"] = rec.CALLS
    if args.inventory:
        from tests.engines.vllm_inventory import build_inventory

        report["inventory"] = build_inventory(rec.CALLS, rec.TRITON_LAUNCHES)
    text = json.dumps(report, indent=1, default=str)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text + "\n")
    failed = [k for k, v in results.items() if "error" in v or not all(b.get("ok") for b in v["batches"].values())]
    return 1 if failed else 0


def _triton_summary(launches):
    summary: dict[str, dict] = {}
    for launch in launches:
        key = f"{launch.get('backend')}|{launch['kernel']}"
        entry = summary.setdefault(key, {"backend": launch.get("backend"), "kernel": launch["kernel"],
                                         "launches": 0, "phases": set()})
        entry["launches"] += 1
        entry["phases"].add(launch.get("phase"))
    return [{**v, "phases": sorted(p for p in v["phases"] if p)} for v in summary.values()]


if __name__ == "__main__":
    sys.exit(main())
