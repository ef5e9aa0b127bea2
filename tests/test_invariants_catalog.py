"""The catalog is complete, readable and wired to the checks."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import re

import pytest

import guardrails
import guardrails.invariants
from guardrails import CATALOG, FmhaInvariantError, Invariant, Level, get
from guardrails.check_context import CHECKS, register
from guardrails.validation import run_order

REQUIRED = {
    "batch-size": Level.SHAPES,
    "query-rows": Level.SHAPES,
    "metadata-dtype-device": Level.SHAPES,
    "forward-mode-kernel": Level.SHAPES,
    "kv-layout": Level.SHAPES,
    "scheduler-metadata": Level.SHAPES,
    "graph-replay-layout": Level.SHAPES,
    "cu-seqlens-monotone": Level.VALUES,
    "max-seq-len": Level.VALUES,
    "page-table-capacity": Level.VALUES,
    "page-id-range": Level.VALUES,
    "seq-len-covers-query": Level.VALUES,
    "uniform-q-len": Level.VALUES,
    "swa-page-id-range": Level.VALUES,
    "last-page-len": Level.VALUES,
}


def test_catalog_holds_the_required_ids_at_their_levels():
    assert {k: v.level for k, v in CATALOG.items()} == REQUIRED


@pytest.mark.parametrize("inv", list(CATALOG.values()), ids=lambda i: i.id)
def test_entries_read_well(inv: Invariant):
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", inv.id)
    for text in (inv.statement, inv.cause, inv.fix):
        assert text.strip() == text and len(text) > 40, (inv.id, text)
    assert inv.source.strip()
    assert not inv.cause.endswith(".") and not inv.fix.endswith(".")  # messages add the period
    assert inv.level in (Level.SHAPES, Level.VALUES)
    assert get(inv.id) is inv


def test_sglang_sources():
    assert CATALOG["batch-size"].source == "SGLang #21649"
    assert CATALOG["uniform-q-len"].source == "SGLang #24856"
    assert CATALOG["forward-mode-kernel"].source == "SGLang #24856"
    assert CATALOG["graph-replay-layout"].source == "SGLang #21987"
    assert CATALOG["max-seq-len"].source == "SGLang #21987"
    assert CATALOG["swa-page-id-range"].source == "SGLang #26966"
    assert CATALOG["batch-size"].url == "https://github.com/sgl-project/sglang/pull/21649"
    assert "FlashInfer" in CATALOG["last-page-len"].source
    assert CATALOG["last-page-len"].url.startswith("https://docs.flashinfer.ai/")


def test_csr_checks_extend_the_existing_invariants():
    # One meaning, one id: the CSR tensors join the invariants that already
    # cover the block table, and only the last page's token tail is new.
    for inv_id, words in {
        "batch-size": ("kv_indptr.shape[0] - 1", "kv_last_page_len.shape[0]"),
        "metadata-dtype-device": ("kv_indptr", "kv_indices", "kv_last_page_len"),
        "cu-seqlens-monotone": ("kv_indptr[-1] <= kv_indices.shape[0]", "num_kv_rows"),
        "page-id-range": ("kv_indices[kv_indptr[0]:kv_indptr[-1]]",),
        "max-seq-len": ("kv_last_page_len",),
        "seq-len-covers-query": ("kv_last_page_len",),
        "last-page-len": ("1..page_size", "seq_lens"),
        "page-table-capacity": ("no CSR counterpart",),
    }.items():
        for word in words:
            assert word in CATALOG[inv_id].statement, (inv_id, word)
    order = list(CATALOG)
    assert order.index("cu-seqlens-monotone") < order.index("last-page-len") < order.index("max-seq-len")


def test_get_unknown_id_lists_the_known_ones():
    with pytest.raises(KeyError, match="batch-size"):
        get("batch-sizes")


def test_every_invariant_has_checks_at_its_levels():
    registered = {(c.invariant, c.level) for c in CHECKS}
    expected = {(inv.id, lvl) for inv in CATALOG.values() for lvl in inv.levels}
    assert registered == expected
    assert CATALOG["graph-replay-layout"].levels == (Level.SHAPES, Level.VALUES)


def test_dependencies_run_before_their_dependents():
    seen: set[tuple[str, Level]] = set()
    for check in run_order():
        for dep in check.needs:
            ran = {inv for inv, _ in seen}
            assert dep in ran, f"{check.invariant} ({check.level}) needs {dep}, which has not run yet"
        seen.add((check.invariant, check.level))


# The first violation validate() reports depends on this sequence: it is the one the
# checks ran in before the catalog was split into one module per invariant.
RUN_ORDER = [
    ("batch-size", Level.SHAPES),
    ("forward-mode-kernel", Level.SHAPES),
    ("query-rows", Level.SHAPES),
    ("metadata-dtype-device", Level.SHAPES),
    ("kv-layout", Level.SHAPES),
    ("scheduler-metadata", Level.SHAPES),
    ("graph-replay-layout", Level.SHAPES),
    ("cu-seqlens-monotone", Level.VALUES),
    ("last-page-len", Level.VALUES),
    ("uniform-q-len", Level.VALUES),
    ("max-seq-len", Level.VALUES),
    ("seq-len-covers-query", Level.VALUES),
    ("page-table-capacity", Level.VALUES),
    ("page-id-range", Level.VALUES),
    ("swa-page-id-range", Level.VALUES),
    ("graph-replay-layout", Level.VALUES),
]


def test_run_order_is_shapes_then_values_each_in_catalog_order():
    order = [(c.invariant, c.level) for c in run_order()]
    assert order == RUN_ORDER
    by_rule = [(inv.id, lvl) for lvl in (Level.SHAPES, Level.VALUES) for inv in CATALOG.values() if lvl in inv.levels]
    assert order == by_rule


def test_each_invariant_lives_in_one_module_named_after_it():
    modules = {m.name for m in pkgutil.iter_modules(guardrails.invariants.__path__)}
    assert modules == {inv.id.replace("-", "_") for inv in CATALOG.values()}
    for inv in CATALOG.values():
        module = importlib.import_module(inv.module)
        assert module.INVARIANT is inv
        assert module.__file__.replace("\\", "/").endswith(inv.module_path)
        doc = module.__doc__
        assert doc.startswith(f"``{inv.id}``") and "Source:" in doc and "Shape part" in doc and "Value part" in doc
    for check in CHECKS:
        assert check.fn.__module__ == CATALOG[check.invariant].module, check


def test_register_refuses_a_level_the_entry_does_not_run_at():
    with pytest.raises(ValueError, match="batch-size runs at shapes"):
        register(CATALOG["batch-size"], Level.VALUES)
    assert len(CHECKS) == len(RUN_ORDER)


def test_level_is_ordered_and_parses():
    assert Level.OFF < Level.SHAPES < Level.VALUES
    assert [Level.parse(s) for s in ("off", "SHAPES", " values ", "0", "1", "2", 2)] == [
        Level.OFF, Level.SHAPES, Level.VALUES, Level.OFF, Level.SHAPES, Level.VALUES, Level.VALUES]
    assert str(Level.SHAPES) == "shapes"
    assert guardrails.Level is guardrails.invariants.Level is guardrails.config.Level
    for bad in ("full", "", 3, True, None):
        with pytest.raises(ValueError, match="off, shapes, values"):
            Level.parse(bad)


def test_error_message_shape_and_pickling():
    err = FmhaInvariantError(
        "batch-size", "the batch sizes disagree",
        {"batch_size": 12, "cu_seqlens_q.shape[0] - 1": 10},
        cause="DP padding.", fix="use cu_seqlens_q.shape[0] - 1", source="SGLang #21649",
    )
    assert isinstance(err, ValueError)
    assert str(err) == (
        "[batch-size] the batch sizes disagree: batch_size=12, cu_seqlens_q.shape[0] - 1=10. "
        "Likely cause: DP padding. Fix: use cu_seqlens_q.shape[0] - 1 (source: SGLang #21649)"
    )
    again = pickle.loads(pickle.dumps(err))
    assert (again.invariant, again.fields, str(again)) == (err.invariant, err.fields, str(err))
    assert guardrails.FmhaInvariantError is FmhaInvariantError


def test_long_lists_are_shortened_in_messages_only():
    lens = list(range(100))
    err = FmhaInvariantError("uniform-q-len", "lengths vary", {"per-request q lengths": lens})
    assert "(100 items)" in str(err) and err.fields["per-request q lengths"] == lens
