"""The guard never breaks serving and says what it did: per-entry-point counters, an internal
error that switches off only its own entry point, and the report (``FMHA_GUARD_REPORT``,
one log line at exit).

Stub kernels carry the installed FlashInfer's real signatures (``functools.wraps``), as in
``tests/test_runtime_guard.py``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from guardrails import FmhaInvariantError
from runtime_checks import guard_report, graph_hooks
from runtime_checks.kernel_specs import ENTRY_POINTS
from runtime_checks.launch_guard import check_replay, make_guard
from runtime_checks.state import STATE, configure

from .launch_args import context_kwargs, decode_kwargs, paged_case
from .test_runtime_guard import LAUNCHED, guard_state, guarded  # noqa: F401 (guard_state: autouse fixture)

ENTRIES = {e.qualname: e for e in ENTRY_POINTS}
DECODE = "trtllm_batch_decode_with_kv_cache"
CONTEXT = "trtllm_batch_context_with_kv_cache"
DECODE_NAME = f"{ENTRIES[DECODE].module}.{DECODE}"
CONTEXT_NAME = f"{ENTRIES[CONTEXT].module}.{CONTEXT}"
fresh_guard = guarded.__wrapped__  # a new guard around a stub with the real signature


def small_case(q_lens, kv_lens):
    return paged_case(q_lens, kv_lens, page_size=4, num_kv_heads=2, group=2, head_dim=8)


def bad_page(kwargs, case):
    bad = dict(kwargs)
    table = kwargs["block_tables"].clone()
    table[0, 0] = case.num_pages + 5
    bad["block_tables"] = table
    return bad


# ----------------------------------------------------------------- internal errors


def test_an_internal_error_disables_only_its_entry_point(caplog):
    decode, context = fresh_guard(DECODE), fresh_guard(CONTEXT)
    case = small_case([1, 1], [5, 9])
    with caplog.at_level(logging.WARNING, logger="fmha_guard"):
        # a check that cannot run: the launch goes through, the entry point's checks go off
        assert decode(query="not a tensor", kv_cache=None, workspace_buffer=None, block_tables=None,
                      seq_lens=None, max_seq_len=1) == LAUNCHED
    counters = STATE.entries[DECODE_NAME]
    assert counters.internal_errors == 1 and not counters.active
    assert counters.disabled.startswith(("AttributeError", "TypeError"))
    assert any("checks are off" in r.getMessage() for r in caplog.records)
    # the decode entry point now passes even a bad launch straight through, counted as unchecked
    assert decode(**bad_page(decode_kwargs(case), case)) == LAUNCHED
    assert counters.unchecked == 1 and counters.launches == 1
    # the other entry points keep checking
    ctx_case = small_case([3, 2], [7, 4])
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        context(**bad_page(context_kwargs(ctx_case), ctx_case))
    assert STATE.entries[CONTEXT_NAME].violations == 1
    # reset_counters switches it back on
    STATE.reset_counters()
    assert counters.active and counters.disabled is None
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        decode(**bad_page(decode_kwargs(case), case))


def test_a_spec_that_cannot_read_its_signature_counts_every_call_unchecked(caplog):
    entry = ENTRIES[DECODE]
    unreadable = type("NoSignature", (), {"__call__": lambda self, *a, **k: LAUNCHED,
                                          "__signature__": property(lambda self: 1 / 0)})()
    with caplog.at_level(logging.WARNING, logger="fmha_guard"):
        guard = make_guard(entry, unreadable)
    counters = STATE.entries[DECODE_NAME]
    assert not counters.checkable and not counters.active
    assert guard() == LAUNCHED and guard() == LAUNCHED
    assert counters.unchecked == 2 and counters.launches == 0
    STATE.reset_counters()
    assert not counters.active  # no spec: still nothing to check with
    fresh_guard(DECODE)  # a guard made again with a readable signature checks again
    assert counters.checkable and STATE.entries[DECODE_NAME].active


def test_counters_are_held_by_the_wrapper_not_looked_up_per_call(monkeypatch):
    guard = fresh_guard(DECODE)
    case = small_case([1, 1, 1], [4, 8, 12])
    kwargs = decode_kwargs(case)
    monkeypatch.setattr(type(STATE), "entry", lambda self, name: pytest.fail("looked up per call"))
    for _ in range(5):
        assert guard(**kwargs) == LAUNCHED
    counters = STATE.entries[DECODE_NAME]
    assert (counters.launches, counters.shape_checks, counters.shape_memo_hits) == (5, 1, 4)
    assert (counters.value_checks, counters.value_memo_hits) == (1, 4)
    assert STATE.launches == 5 and STATE.value_memo_hits == 4  # the totals are the sums


def test_per_entry_counts_of_warned_violations_and_capture_skips():
    configure("values", "warn")

    class FakeGraph:
        def capture_begin(self, *a, **k):
            pass

        def capture_end(self):
            pass

        def replay(self):
            pass

    assert graph_hooks.install(FakeGraph, replay_check=check_replay)
    try:
        decode = fresh_guard(DECODE)
        case = small_case([1, 1], [5, 9])
        with pytest.warns(Warning):
            assert decode(**bad_page(decode_kwargs(case), case)) == LAUNCHED
        graph = FakeGraph()
        graph.capture_begin()
        decode(**decode_kwargs(case))
        decode(**decode_kwargs(case))
        graph.capture_end()
        graph.replay()
    finally:
        graph_hooks.uninstall(FakeGraph)
    counters = STATE.entries[DECODE_NAME].as_dict()
    assert counters["violations"] == 1 and counters["capture_skips"] == 2 and counters["launches"] == 3
    assert STATE.warned == 1
    replay = STATE.entries["torch.cuda.CUDAGraph.replay"].as_dict()
    assert replay["value_checks"] == 1 and replay["violations"] == 0


# ----------------------------------------------------------------- the report


def test_report_summary_and_atomic_write(tmp_path):
    decode = fresh_guard(DECODE)
    case = small_case([1, 1], [5, 9])
    for _ in range(3):
        decode(**decode_kwargs(case))
    data = guard_report.report()
    assert data["format"] == guard_report.FORMAT and data["level"] == "values"
    entry = data["entry_points"][DECODE_NAME]
    assert (entry["launches"], entry["shape_memo_hits"], entry["value_memo_hits"], entry["unchecked"]) == (3, 2, 2, 0)
    assert data["totals"]["launches"] == 3
    line = guard_report.summary_line(data)
    assert "3 launches checked" in line and "0 violations" in line
    target = tmp_path / "report-{pid}.json"
    written = guard_report.write(target)
    assert written.name == f"report-{os.getpid()}.json"
    assert json.loads(written.read_text())["entry_points"][DECODE_NAME]["launches"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temporary file left behind
    with pytest.raises(OSError):
        guard_report.write(tmp_path / "missing-dir" / "r.json")


_EXIT_SCRIPT = textwrap.dedent("""
    import functools, logging, sys
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    import flashinfer.decode as decode_module
    from runtime_checks.kernel_specs import ENTRY_POINTS
    from runtime_checks.launch_guard import make_guard
    from runtime_checks.state import configure
    from tests.launch_args import decode_kwargs, paged_case

    entry = next(e for e in ENTRY_POINTS if e.qualname == "trtllm_batch_decode_with_kv_cache")

    @functools.wraps(decode_module.trtllm_batch_decode_with_kv_cache)
    def stub(*a, **k):
        return None

    guard = make_guard(entry, stub)
    configure("values", "warn")
    case = paged_case([1, 1], [5, 9], page_size=4, num_kv_heads=2, group=2, head_dim=8)
    kwargs = decode_kwargs(case)
    guard(**kwargs)
    guard(**kwargs)
    bad = dict(kwargs, seq_lens=kwargs["seq_lens"] + 1000)
    guard(**bad)
""")


def test_exit_report_file_and_log_line(tmp_path, repo_root):
    target = tmp_path / "guard.json"
    env = {**os.environ, "FMHA_GUARD_REPORT": str(target), "FLASHINFER_NO_DOWNLOAD": "1"}
    env.pop("FMHA_GUARD", None)
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(target.read_text())
    entry = data["entry_points"]["flashinfer.decode.trtllm_batch_decode_with_kv_cache"]
    assert entry["launches"] == 3 and entry["violations"] == 1 and entry["value_memo_hits"] == 1
    lines = [line for line in proc.stderr.splitlines() if "launches checked" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "1 violation" in lines[0]
    assert str(target) in lines[0]
