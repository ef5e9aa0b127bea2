"""Driver: run SGLang's real attention backends of one published version on CPU.

    python -m tests.engines.run_sglang --version 0.5.23 [--backends A,B] [--modes M,N]
                                       [--json report.json] [--inventory]

One SGLang version per process (``sys.modules`` is never shared between versions). The
JSON report holds, per (backend, mode, page size), the status, the backend methods that
ran with their phase (eager / capture / replay) and every recorded kernel entry point
with its launches; ``--inventory`` prints the FMHA entry points and argument forms per
backend and mode instead. With ``FMHA_GUARD=shapes|values`` in the environment the
runtime guard is active (installed at interpreter start) and each entry carries the
change of the guard's counters during that call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections import defaultdict
from typing import Any


def run(version: str, backends: set[str] | None = None, modes: set[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    from . import sglang_env
    from .engine_wheels import ENGINE_CACHE

    # bytecode for the engine's ~2000 modules, kept in the git-ignored cache (the
    # environment may set PYTHONDONTWRITEBYTECODE; nothing is written beside sources)
    sys.pycache_prefix = str(ENGINE_CACHE / "pycache")
    sys.dont_write_bytecode = False

    root = sglang_env.bootstrap(version)
    booted = time.perf_counter()
    from . import (cuda_on_cpu, flashinfer_recorders, guard_probe, import_stubs, kernel_recorders,
                   sglang_kit)

    cases = importlib.import_module(f".sglang_{version.replace('.', '_')}_cases", __package__)
    sglang_kit.track_backend_classes(cases.backend_classes())
    imported = time.perf_counter()
    results = []
    for spec in sglang_kit.SPECS[version]:
        if backends and spec.name not in backends:
            continue
        for page_size in spec.page_sizes:
            for mode in spec.modes:
                if modes and mode not in modes:
                    continue
                results.append(sglang_kit.run_case(spec, mode, page_size, cases.run).as_json())
    import flashinfer

    return {
        "engine": "sglang",
        "version": version,
        "engine_root": str(root),
        "flashinfer": getattr(flashinfer, "__version__", "?"),
        "guard": guard_probe.guard_status(),
        "seconds": {"bootstrap": round(booted - started, 2), "imports": round(imported - booted, 2),
                    "cases": round(time.perf_counter() - imported, 2)},
        "stubs": {
            "placeholder_modules": sglang_env.PLACEHOLDERS,
            "placeholder_calls": sorted(set(import_stubs.PLACEHOLDER_CALLS)),
            "kernel_recorders": kernel_recorders.INSTALLED,
            "dropped_fake_registrations": sorted(set(kernel_recorders.DROPPED_FAKE_REGISTRATIONS)),
            "flashinfer_generator_fallbacks": flashinfer_recorders.GENERATOR_FALLBACKS,
            "flashinfer_device_facts": flashinfer_recorders.DEVICE_FACTS,
            "engine_jit_requests": sorted(set(sglang_env.ENGINE_JIT_REQUESTS)),
            "cuda_graph_replays": cuda_on_cpu.graph_replays(),
        },
        "cases": results,
    }


# --- inventory ------------------------------------------------------------------------

_ARG_SKIP = {"float_workspace_buffer", "int_workspace_buffer", "page_locked_int_workspace_buffer",
             "workspace_buffer"}


def _form(value: Any) -> str:
    if isinstance(value, dict):
        if "tensor" in value:
            shape = "x".join(map(str, value["tensor"]))
            text = f"{value['dtype']}[{shape}] {len(value['tensor'])}-D"
            if not value.get("contiguous", True):
                text += f" strided{value['stride']}"
            if value.get("pinned_host"):
                text += " pinned-host"
            if "values" in value and len(value["values"]) <= 12:
                text += f" ={value['values']}"
            return text
        for kind in ("tuple", "list"):
            if kind in value:
                items = value[kind]
                if isinstance(items, int):
                    return f"{kind}(len {items})"
                return f"{kind}(" + ", ".join(_form(v) for v in items) + ")"
        if "dtype" in value:
            return value["dtype"]
        if "object" in value:
            return f"<{value['object']}>"
        if "dict" in value:
            return "{" + ", ".join(f"{k}: {_form(v)}" for k, v in value["dict"].items()) + "}"
    return repr(value)


def _buffer_notes(args: dict[str, Any]) -> list[str]:
    """Index buffers longer than the used prefix (CUDA-graph style preallocation)."""
    notes = []
    for name, value in args.items():
        if not (isinstance(value, dict) and "tensor" in value) or "indices" not in name:
            continue
        ptr_name = name.replace("indices", "indptr")
        for ptr_name, ptr in [(ptr_name, args.get(ptr_name))]:
            if isinstance(ptr, dict) and ptr.get("values"):
                used = ptr["values"][-1]
                if value["tensor"] and value["tensor"][0] > used:
                    notes.append(f"{name} has {value['tensor'][0]} entries, {ptr_name}[-1]={used} used")
    return notes


def inventory(report: dict[str, Any]) -> str:
    lines = [f"SGLang {report['version']} (FlashInfer {report['flashinfer']}): FMHA entry points "
             f"per backend / mode / phase"]
    by_backend: dict[str, list[dict]] = defaultdict(list)
    for case in report["cases"]:
        by_backend[case["backend"]].append(case)
    for backend, cases in by_backend.items():
        lines.append(f"\n== {backend}")
        for case in cases:
            header = f"-- {case['mode']} page_size={case['page_size']}: {case['status']}"
            if case["status"] != "ok":
                header += f" ({(case['error'] or '').splitlines()[0][:200]})"
            lines.append(header)
            seen: set[tuple] = set()
            for entry in case["entries"]:
                if entry["entry"].endswith("__init__") and case["mode"] not in ("EXTEND",):
                    continue
                args = {k: v for k, v in entry["args"].items() if k not in _ARG_SKIP}
                key = (entry["entry"], entry["phase"], json.dumps(args, sort_keys=True))
                if key in seen:
                    continue
                seen.add(key)
                kernels = sorted({launch["kernel"].split(":")[-1] for launch in entry["launches"]})
                lines.append(f"   [{entry['phase']}] {entry['entry']}  <- {entry['caller']}"
                             + (f"  => {', '.join(kernels)}" if kernels else ""))
                for name, value in args.items():
                    if value is None:
                        continue
                    lines.append(f"        {name}: {_form(value)}")
                for note in _buffer_notes(entry["args"]):
                    lines.append(f"        note: {note}")
                if entry.get("guard") is not None:
                    lines.append(f"        guard: {entry['guard']}")
                if entry.get("error"):
                    lines.append(f"        error: {entry['error'][:200]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, choices=["0.5.9", "0.5.23"])
    parser.add_argument("--backends", help="comma-separated backend class names")
    parser.add_argument("--modes", help="comma-separated modes")
    parser.add_argument("--json", help="write the report here (default: stdout)")
    parser.add_argument("--inventory", action="store_true", help="print the entry-point inventory")
    args = parser.parse_args(argv)
    report = run(args.version, set(args.backends.split(",")) if args.backends else None,
                 set(args.modes.split(",")) if args.modes else None)
    text = json.dumps(report, indent=1, default=str)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text)
    if args.inventory:
        print(inventory(report))
    elif not args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
