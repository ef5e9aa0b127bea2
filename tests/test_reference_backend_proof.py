"""The GPU proof script and the serve loop, run on CPU (torch kernels): the same code
paths the device run takes, minus FlashInfer and real CUDA graphs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_proof_script_on_cpu(tmp_path):
    out = tmp_path / "proof.json"
    run = subprocess.run([sys.executable, "-m", "tests.gpu.reference_backend_proof", "--device", "cpu", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    modes = {(r["mode"], r["pool"], r["graph"]) for r in report["modes"]}
    for mode in ("EXTEND", "EXTEND+DP-padding", "DECODE", "TARGET_VERIFY", "DRAFT_EXTEND_V2", "IDLE+DP-padding"):
        for pool in ("full", "swa"):
            assert (mode, pool, False) in modes
    for pool in ("full", "swa"):
        assert ("DECODE", pool, True) in modes and ("TARGET_VERIFY", pool, True) in modes
    assert all(r["ok"] and r["rel_err"] <= 1e-2 for r in report["modes"])
    seeds = {(r["seed"], r["graphs"]): r for r in report["seeds"]}
    assert set(seeds) == {("pr21649", False), ("pr24856", False), ("pr21987", False), ("pr26966", False),
                          ("pr21987", True)}
    for r in seeds.values():
        assert r["guarded"]["raised"] == r["guarded"]["expected"] and r["guarded"]["ok"]
    # what the buggy variants do unguarded on the torch kernels
    assert seeds[("pr24856", False)]["unguarded"]["outcome"] == "wrong"
    assert seeds[("pr26966", False)]["unguarded"]["outcome"] == "kernel-error"  # an index past the SWA pool
    assert seeds[("pr21649", False)]["unguarded"]["outcome"] == "kernel-error"  # offsets read past the end


def test_serve_loop_on_cpu():
    run = subprocess.run([sys.executable, "examples/serve_loop.py", "--device", "cpu", "--steps", "25", "--check",
                          "--repeat", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "(OK)" in out.split("check:")[1].splitlines()[0]
    for level in ("off", "shapes", "values"):
        assert f"FMHA_GUARD={level}" in out
    for mode in ("EXTEND", "DECODE(graph)", "TARGET_VERIFY(graph)", "DRAFT_EXTEND_V2"):
        assert mode in out
    assert "catalog runs: 0 shape, 0 value" in out.split("FMHA_GUARD=off")[1].splitlines()[0]
