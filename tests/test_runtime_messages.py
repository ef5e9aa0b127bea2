"""What a violation says: the entry point and the call site in every message (raise and warn),
no measurement notes in the error, warn mode through the warnings module at the call site."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from guardrails import CATALOG, FmhaInvariantError
from guardrails.errors import FmhaInvariantWarning
from guardrails.warning_channel import honour_warning_options
from runtime_checks import launch_guard
from runtime_checks.kernel_specs import ENTRY_POINTS
from runtime_checks.launch_guard import make_guard
from runtime_checks.state import STATE, configure

from .launch_args import context_kwargs, decode_kwargs, paged_case

REPO = Path(__file__).resolve().parent.parent
DECODE = "flashinfer.decode.trtllm_batch_decode_with_kv_cache"
CONTEXT = "flashinfer.prefill.trtllm_batch_context_with_kv_cache"
LAUNCHES: list[str] = []


def stub_guard(qualified: str):
    """The guard of a stub kernel carrying the real FlashInfer signature of ``qualified``."""
    entry = next(e for e in ENTRY_POINTS if f"{e.module}.{e.qualname}" == qualified)
    real = getattr(importlib.import_module(entry.module), entry.qualname)

    @functools.wraps(real)
    def stub(*args, **kwargs):
        LAUNCHES.append(qualified)
        return "launched"

    return make_guard(entry, stub)


def small_case(q_lens, kv_lens):
    return paged_case(q_lens, kv_lens, page_size=4, num_kv_heads=2, group=2, head_dim=8)


def dp_padded_context():  # SGLang #21649, shapes level
    case = small_case([3, 1, 5, 2], [7, 1, 20, 2])
    return dict(context_kwargs(case), batch_size=case.batch_size + 2)


def bad_page_id_decode():  # page-id-range (an H200 measurement), values level
    case = small_case([1] * 3, [5, 9, 17])
    table = case.page_table.clone()
    table[1, 0] = case.num_pages + 3
    return dict(decode_kwargs(case), block_tables=table)


@pytest.fixture(autouse=True)
def guard_state():
    configure("values", "raise")
    STATE.reset_counters()
    LAUNCHES.clear()
    yield
    configure("off", "raise")
    STATE.reset_counters()


# ----------------------------------------------------------------- raise


def test_raised_error_names_the_entry_point_and_the_call_site():
    guard = stub_guard(CONTEXT)
    with pytest.raises(FmhaInvariantError) as info:
        line = sys._getframe().f_lineno + 1
        guard(**dp_padded_context())
    error = info.value
    assert error.invariant == "batch-size" and LAUNCHES == []
    assert error.entry_point == CONTEXT
    assert error.call_site == f"{__file__}:{line} in test_raised_error_names_the_entry_point_and_the_call_site"
    assert f"In {CONTEXT}, called from {__file__}:{line} in " in str(error)
    assert error.__suppress_context__ and error.__cause__ is None  # no chained "during handling" traceback
    assert str(error).endswith("(source: SGLang #21649)")


def test_raised_error_carries_no_measurement_notes():
    with pytest.raises(FmhaInvariantError) as info:
        stub_guard(DECODE)(**bad_page_id_decode())
    message = str(info.value)
    entry = CATALOG["page-id-range"]
    assert info.value.invariant == "page-id-range" and f"In {DECODE}, called from {__file__}:" in message
    assert entry.measured and entry.measured not in message
    assert "without crashing" not in message and "crashed" not in message
    assert message.endswith("(source: H200 xqa measurement)")


def test_no_catalog_cause_holds_a_measurement_note():
    """Measurements live in ``measured`` (``fmha-guard explain``), not in the cause every error prints."""
    for entry in CATALOG.values():
        assert "crash" not in entry.cause and "wrong numbers" not in entry.cause, entry.id
        assert "crash" not in entry.source, entry.id
    from fmha_guard.catalog_commands import describe_invariant

    assert f"Measured: {CATALOG['page-id-range'].measured}" in describe_invariant(CATALOG["page-id-range"])
    assert "Measured:" not in describe_invariant(CATALOG["kv-layout"])


def test_located_errors_pickle():
    import pickle

    with pytest.raises(FmhaInvariantError) as info:
        stub_guard(CONTEXT)(**dp_padded_context())
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.entry_point, again.call_site, str(again)) == (info.value.entry_point, info.value.call_site, str(info.value))


# ----------------------------------------------------------------- the call site is decided by module name


def _module_from_file(path: Path, name: str, source: str):
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_engine_file_named_flashinfer_backend_is_the_call_site(tmp_path):
    """Its path holds "flashinfer" (and its folder "runtime_checks"): still the engine's frame."""
    folder = tmp_path / "runtime_checks_engine"
    folder.mkdir()
    backend = _module_from_file(folder / "flashinfer_backend.py", "flashinfer_backend", """
        def forward_extend(kernel, kwargs):
            return kernel(**kwargs)
    """)
    with pytest.raises(FmhaInvariantError) as info:
        backend.forward_extend(stub_guard(CONTEXT), dp_padded_context())
    assert info.value.call_site == f"{folder / 'flashinfer_backend.py'}:3 in forward_extend"


def _exec_as(module: str, filename: str) -> dict:
    namespace = {"__name__": module}
    exec(compile("def call(kernel, kwargs):\n    return kernel(**kwargs)\n", filename, "exec"), namespace)
    return namespace


def test_kernel_library_and_partialmethod_frames_are_skipped():
    """A frame of a kernel library's module (FlashInfer, vLLM's vendored flash-attn calling
    its own entry point) is not the call site, nor is functools' partialmethod plumbing."""
    inner = _exec_as("flashinfer.sampling", "/site/flashinfer/sampling.py")
    partial = functools.partialmethod(lambda self, kernel, kwargs: inner["call"](kernel, kwargs))

    class Wrapper:
        run = partial

    with pytest.raises(FmhaInvariantError) as info:
        Wrapper().run(stub_guard(CONTEXT), dp_padded_context())
    # the lambda (this file's code) is the first frame outside flashinfer.* and functools
    assert info.value.call_site == f"{__file__}:{partial.func.__code__.co_firstlineno} in <lambda>"

    vendored = _exec_as("vllm.vllm_flash_attn.flash_attn_interface", "/site/vllm/vllm_flash_attn/flash_attn_interface.py")
    backend = _exec_as("vllm.v1.attention.backends.flash_attn", "/site/vllm/v1/attention/backends/flash_attn.py")
    backend["inner"] = vendored["call"]
    exec(compile("def forward(kernel, kwargs):\n    return inner(kernel, kwargs)\n",
                 "/site/vllm/v1/attention/backends/flash_attn.py", "exec"), backend)
    with pytest.raises(FmhaInvariantError) as info:
        backend["forward"](stub_guard(CONTEXT), dp_padded_context())
    assert info.value.call_site == "/site/vllm/v1/attention/backends/flash_attn.py:2 in forward"


# ----------------------------------------------------------------- warn


def test_warn_mode_issues_one_warning_per_call_site_located_there(caplog):
    configure("values", "warn")
    guard = stub_guard(DECODE)
    kwargs = bad_page_id_decode()
    with caplog.at_level(logging.WARNING, logger="fmha_guard"), pytest.warns(FmhaInvariantWarning) as record:
        for _ in range(3):
            assert guard(**kwargs) == "launched"; line = sys._getframe().f_lineno  # noqa: E702
        assert guard(**kwargs) == "launched"  # another call site: warned again
    assert LAUNCHES == [DECODE] * 4 and STATE.warned == 4
    assert [(w.filename, w.lineno) for w in record] == [(__file__, line), (__file__, line + 1)]
    message = str(record[0].message)
    assert message.startswith("[page-id-range] ") and f"In {DECODE}, called from {__file__}:{line} in " in message
    assert message.endswith("FMHA_GUARD_ACTION=warn let the launch through.")
    assert [r.getMessage() for r in caplog.records if r.name == "fmha_guard"] == [str(w.message) for w in record]


def test_a_warnings_filter_turns_warn_mode_into_errors_at_every_launch():
    configure("values", "warn")
    guard = stub_guard(DECODE)
    kwargs = bad_page_id_decode()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FmhaInvariantWarning)
        for _ in range(2):
            with pytest.raises(FmhaInvariantWarning, match=r"\[page-id-range\]"):
                guard(**kwargs)
    assert LAUNCHES == []  # raised before the launch, both times
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FmhaInvariantWarning)
        assert guard(**kwargs) == "launched"


_W_ERROR_SCRIPT = """
import functools, warnings
from runtime_checks.state import configure
from tests.test_runtime_messages import DECODE, LAUNCHES, bad_page_id_decode, stub_guard
configure("values", "warn")
guard = stub_guard(DECODE)
for _ in range(2):
    try:
        guard(**bad_page_id_decode())
    except Exception as exc:
        print("RAISED", type(exc).__name__)
print("LAUNCHES", len(LAUNCHES))
"""


def test_python_dash_w_error_names_our_category():
    """``python -W error::guardrails.errors.FmhaInvariantWarning`` works although Python
    drops that option at start (guardrails is not importable yet then)."""
    proc = subprocess.run(
        [sys.executable, "-W", "error::guardrails.errors.FmhaInvariantWarning", "-c", _W_ERROR_SCRIPT],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["RAISED FmhaInvariantWarning", "RAISED FmhaInvariantWarning", "LAUNCHES 0"]


def test_honoured_options_are_those_naming_our_categories():
    with warnings.catch_warnings():
        before = list(warnings.filters)
        honour_warning_options(["error::guardrails.errors.FmhaInvariantWarning:some.module:12", "ignore::UserWarning",
                                "error::guardrails.errors.NoSuchWarning", "bogus::guardrails.errors.FmhaInvariantWarning",
                                "i:x:guardrails.errors.FmhaGuardConfigWarning"])
        added = warnings.filters[: len(warnings.filters) - len(before)]
    assert [(a, m and m.pattern, c.__name__, mod and mod.pattern, n) for a, m, c, mod, n in added] == [
        ("ignore", "x", "FmhaGuardConfigWarning", None, 0),
        ("error", None, "FmhaInvariantWarning", r"some\.module\Z", 12),
    ]


def test_listeners_see_every_violation_located():
    seen = []
    launch_guard.VIOLATION_LISTENERS.append(seen.append)
    try:
        configure("values", "warn")
        guard = stub_guard(DECODE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guard(**bad_page_id_decode())
            guard(**bad_page_id_decode())
    finally:
        launch_guard.VIOLATION_LISTENERS.remove(seen.append)
    assert [(e.invariant, e.entry_point) for e in seen] == [("page-id-range", DECODE)] * 2
