"""examples/seed_bugs/: each script, run on CPU as a reader runs it, prints the lint
finding on its buggy backend (none on the fixed one), the guard's FmhaInvariantError,
and the fixed backend matching the float64 reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

SCRIPTS = {  # script -> (rule on the buggy class, invariant the guard raises)
    "pr21649_padded_batch_size.py": ("GR001", "batch-size"),
    "pr24856_draft_extend_on_decode_kernel.py": ("GR003", "forward-mode-kernel"),
    "pr21987_graph_replay_layout.py": ("GR004", "graph-replay-layout"),
    "pr26966_stale_swa_pool.py": ("GR002", "swa-page-id-range"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_seed_bug_script(repo_root, script):
    rule, invariant = SCRIPTS[script]
    env = {**os.environ, "FLASHINFER_NO_DOWNLOAD": "1"}
    env.pop("FMHA_GUARD", None)  # the script sets it itself
    run = subprocess.run([sys.executable, str(repo_root / "examples" / "seed_bugs" / script)], cwd=repo_root,
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    lint, guard, fixed = (out.index(f"== {i}.") for i in (1, 2, 3))
    assert lint < guard < fixed, out
    lint_part = out[lint:guard]
    assert re.search(rf"Backend: {rule} [a-z-]+ at line \d+", lint_part), out
    assert "ReferenceAttnBackend (fixed): no findings" in lint_part
    assert f"FmhaInvariantError invariant={invariant}" in out[guard:fixed]
    assert f"message: [{invariant}]" in out[guard:fixed]
    err = float(re.search(r"max relative error (\S+)", out[fixed:]).group(1))
    assert err <= 1e-2, out
