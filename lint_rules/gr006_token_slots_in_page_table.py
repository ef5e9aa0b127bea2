"""GR006 token-slots-in-page-table (SGLang #23757, the FA3 local-attention fix of 0.5.20)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .cst_analysis import callee_name, iter_calls, param_names, self_method
from .dataflow import FlowState, FlowWalker, tainted_parts
from .finding import Evidence
from .page_units import dotted, is_page_size_test, make_token_classifier, page_table_args
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid

#: ``assert self.page_size == 1``: a cheap text test before :func:`_asserts_unit_page`.
_UNIT_PAGE_ASSERT = re.compile(r"assert\s+(?:self\.)?page_size\s*==\s*1\b")


def _asserts_unit_page(fn: cst.FunctionDef, text: str, config) -> bool:
    """The method asserts ``page_size == 1`` unconditionally (a statement of its body)."""
    if not _UNIT_PAGE_ASSERT.search(text):
        return False
    for stmt in fn.body.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Assert) and is_page_size_test(small.test, config) == "unit":
                    return True
    return False


@dataclass(frozen=True)
class _Link:
    """One helper call on the way to a sink: the call, and the method it is in."""

    call: cst.Call
    caller: cst.FunctionDef


class TokenSlotsInPageTable(LintRule):
    """Token-slot indices (`req_to_token` rows, `out_cache_loc`) reach a page-table argument unconverted.

    ## What it does
    In an attention backend whose page size is a variable (`self.page_size`), follows
    token-slot indices (SGLang's `req_to_token[...]` rows and `out_cache_loc`, vLLM's
    `slot_mapping`, and a full->SWA translation of them, which keeps token units) through
    local names, metadata fields (`metadata.page_table = req_to_token[...]`) and `self`
    helpers (two levels), and flags where they reach a page-table argument:
    `page_table=` / `block_table=` / `block_tables=` of a kernel call (`extra-kernel-calls`), or the block table
    of `make_local_attention_virtual_batches`, without the conversion to page ids
    (`x[:, ::page_size] // page_size`, `x // self.page_size`). A path on which the page
    size is 1 (`if self.page_size > 1: <convert>`) and a method that asserts
    `page_size == 1` are not flagged.

    ## Why is this bad?
    A page table holds one page id per `page_size` tokens; `req_to_token` holds one KV
    slot per token. At page size 1 they are the same numbers, so the bug passes every test
    run there; at 16, 32 or 64 the kernel reads page `slot` instead of `slot // page_size`:
    wrong keys, or an illegal memory access past the pool. SGLang's XPU backend handed the
    eager token table to `make_local_attention_virtual_batches` (#23757, 0.5.13); FA3
    did the same until 0.5.20.

    ## Known problems
    Units are followed inside one class: a metadata field filled by one method and read
    by another outside a `self` helper call is not followed, and page ids put through a
    token-level map (`translate_loc_from_full_to_swa(page_ids)`) are not reported.
    A conversion is recognised by a division by a page-size name
    (`extra-page-size-names`); a helper that converts under another name is not seen.

    ## Example
    ```python
    metadata.page_table = forward_batch.req_to_token_pool.req_to_token[
        forward_batch.req_pool_indices, : metadata.max_seq_len_k
    ]
    self._init_local_attn_metadata(forward_batch, metadata, device)
    ```

    ## Use instead
    Convert to page ids before the table is read as one:
    ```python
    page_table = metadata.page_table
    if self.page_size > 1:
        page_table = page_table[:, :: self.page_size] // self.page_size
    make_local_attention_virtual_batches(chunk, cu_q, seq_lens, page_table, self.page_size)
    ```

    ## Options
    - `extra-token-slot-sources`: more attributes that hold token-slot indices.
    - `extra-page-table-args`: more keyword arguments that take a page table.
    - `extra-page-table-positional`: more `function:index` positional page-table arguments.
    - `extra-page-size-names`: more names of the page size (a division by one converts).

    ## References
    - [SGLang #23757](https://github.com/sgl-project/sglang/pull/23757): the XPU backend's
      local-attention block table, token-granular at page size > 1.
    - [SGLang #16267](https://github.com/sgl-project/sglang/pull/16267): SWA page table
      translation for page size > 1 (translate token locations, not page ids).
    """

    CODE = "GR006"
    NAME = "token-slots-in-page-table"
    MESSAGE = "token-slot indices reach a page-table argument without the page-size conversion (SGLang #23757):"
    MAX_DEPTH = 2

    VALID = [
        Valid(  # converted before the kernel reads it
            """
            class FlashAttentionBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    metadata = FlashAttentionMetadata()
                    metadata.page_table = forward_batch.req_to_token_pool.req_to_token[
                        forward_batch.req_pool_indices, : metadata.max_seq_len_k
                    ]
                    metadata.page_table = metadata.page_table[:, self.strided_indices] // self.page_size
                    self._init_local_attn_metadata(forward_batch, metadata, self.device)

                def _init_local_attn_metadata(self, forward_batch, metadata, device):
                    make_local_attention_virtual_batches(chunk, cu_q, seq_lens, metadata.page_table, self.page_size)
            """
        ),
        Valid(  # the helper converts on the paged path (SGLang 0.5.20)
            """
            class FlashAttentionBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    metadata = FlashAttentionMetadata()
                    metadata.page_table = forward_batch.req_to_token_pool.req_to_token[
                        forward_batch.req_pool_indices, : metadata.max_seq_len_k
                    ]
                    self._maybe_init_local_attn_metadata(forward_batch, metadata, self.device)

                def _maybe_init_local_attn_metadata(self, forward_batch, metadata, device):
                    if self.use_sliding_window_kv_pool:
                        page_table = self.token_to_kv_pool.translate_loc_from_full_to_swa(metadata.page_table)
                    else:
                        page_table = metadata.page_table
                    if self.page_size > 1:
                        page_table = page_table[:, :: self.page_size] // self.page_size
                    make_local_attention_virtual_batches(chunk, cu_q, seq_lens, page_table, self.page_size)
            """
        ),
        Valid(  # page size pinned to 1
            """
            class TritonAttnBackend(AttentionBackend):
                def forward_decode(self, q, k, v, layer, forward_batch):
                    assert self.page_size == 1
                    page_table = forward_batch.req_to_token_pool.req_to_token[forward_batch.req_pool_indices]
                    return flash_attn_with_kvcache(q, k_cache, v_cache, page_table=page_table)
            """
        ),
    ]
    INVALID = [
        Invalid(  # SGLang 0.5.12 xpu_backend.py: the eager token table, then the helper
            """
            class XPUAttentionBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    metadata = FlashAttentionMetadata()
                    metadata.page_table = forward_batch.req_to_token_pool.req_to_token[
                        forward_batch.req_pool_indices, : metadata.max_seq_len_k
                    ]
                    self._init_local_attn_metadata(forward_batch, metadata, self.device)
                    metadata.page_table = metadata.page_table[:, self.strided_indices] // self.page_size

                def _init_local_attn_metadata(self, forwardbatch, metadata, device):
                    if self.is_hybrid_swa:
                        page_table = self.full_to_swa_index_mapping[metadata.page_table].to(torch.int32)
                    else:
                        page_table = metadata.page_table
                    make_local_attention_virtual_batches(chunk, cu_q, seq_lens, page_table, self.page_size)
            """,
            line=15,
        ),
        Invalid(  # a req_to_token slice straight into the FA3 kernel
            """
            class FooBackend(AttentionBackend):
                def forward_decode(self, q, k, v, layer, forward_batch):
                    page_table = forward_batch.req_to_token_pool.req_to_token[
                        forward_batch.req_pool_indices, : self.max_context_len
                    ]
                    return flash_attn_with_kvcache(
                        q, k_cache, v_cache, page_table=page_table, page_size=self.page_size
                    )
            """,
            line=7,
        ),
    ]

    def wants(self, source: str) -> bool:
        if "page_size" not in source:
            return False
        if not any(w in source for w in self.config.token_slot_sources):
            return False
        if not any(w.split("*")[0] in source for w in self.config.page_table_args if w.split("*")[0]) and not any(
            e.rpartition(":")[0] in source for e in self.config.page_table_positional
        ):
            return False
        return super().wants(source)

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: dict[tuple[int, int], Finding] = {}
        classify = make_token_classifier(self.config)
        for cls in iter_backend_classes(ctx.module, self.config.profile):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            texts = {name: ctx.method_text(fn) for name, fn in methods.items()}
            if not any("page_size" in t for t in texts.values()):
                continue
            init = methods.get("__init__")
            if init is not None and _asserts_unit_page(init, texts["__init__"], self.config):
                continue
            seen: set[tuple[str, frozenset[str]]] = set()
            for name, fn in methods.items():
                if not any(w in texts[name] for w in self.config.token_slot_sources):
                    continue
                self._walk(ctx, fn, FlowState(), (), methods, texts, classify, findings, seen)
        return list(findings.values())

    def _walk(self, ctx, fn, start, chain, methods, texts, classify, findings, seen) -> None:
        if _asserts_unit_page(fn, texts.get(fn.name.value, ""), self.config):
            return
        config = self.config

        def after_if(stmt: cst.If, before: FlowState, after: FlowState) -> FlowState:
            kind = is_page_size_test(stmt.test, config)
            if kind is None:
                return after
            then = walker._block(stmt.body, before)
            if kind == "paged":  # the other path has page size 1: slots are page ids there
                return after if then.dead else then
            if stmt.orelse is None or isinstance(stmt.orelse, cst.If):
                return after
            other = walker._block(stmt.orelse.body, before)
            return after if other.dead else other

        def on_statement(node: cst.CSTNode, state: FlowState) -> FlowState | None:
            for call in iter_calls(node):
                callee = ctx.callee(call) or callee_name(call)
                for arg in page_table_args(call, config, callee):
                    hits = tainted_parts(arg.value, state, classify)
                    if hits:
                        self._report(ctx, fn, arg, hits[0], state, chain, findings)
                helper = self_method(call, methods)
                if helper is not None and len(chain) < self.MAX_DEPTH and helper is not fn:
                    tainted = _bound(helper, call, state, classify)
                    if tainted:
                        key = (helper.name.value, tainted)
                        if key not in seen:
                            seen.add(key)
                            link = (*chain, _Link(call, fn))
                            self._walk(ctx, helper, FlowState(tainted=tainted), link, methods, texts, classify, findings, seen)
            return _bind_fields(node, state, classify)

        walker = FlowWalker(classify, on_statement, after_if=after_if)
        walker.run(fn.body.body, start)

    def _report(self, ctx, fn, arg, hit, state, chain, findings) -> None:
        line, col = ctx.position(arg, fn)
        if (line, col) in findings:
            return
        evidence: list[Evidence] = []
        for link in chain:
            evidence.append(ctx.evidence("token slots passed to helper", link.call, link.caller))
        origin = state.origins.get(hit.value) if isinstance(hit, cst.Name) else None
        if origin:
            evidence.extend(ctx.evidence_chain("token slots", origin, fn))
        elif not chain:
            evidence.append(ctx.evidence("token slots", hit, fn))
        evidence.append(ctx.evidence("page-table argument", arg, fn))
        what = ctx.code(hit)
        detail = (
            f"`{ctx.code_of_arg(arg)}` holds token slots (from `{what}`), not page ids; at page size > 1 "
            "divide by the page size first (`x[:, ::page_size] // page_size`)."
        )
        findings[(line, col)] = self.finding(ctx, arg, fn, detail, evidence=evidence)


def _bound(helper: cst.FunctionDef, call: cst.Call, state: FlowState, classify) -> frozenset[str]:
    """The helper's parameters (and ``param.field`` names) that receive token slots."""
    params = [p.name.value for p in param_names(helper)]
    positional = [p.name.value for p in [*helper.params.posonly_params, *helper.params.params]]
    if positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    tainted: set[str] = set()
    index = 0
    for arg in call.args:
        if arg.star:
            return frozenset()
        if arg.keyword is not None:
            name = arg.keyword.value
            if name not in params:
                continue
        else:
            if index >= len(positional):
                return frozenset()
            name = positional[index]
            index += 1
        if tainted_parts(arg.value, state, classify):
            tainted.add(name)
        if isinstance(arg.value, cst.Name):
            prefix = arg.value.value + "."
            tainted.update(name + "." + t[len(prefix):] for t in state.tainted if t.startswith(prefix))
    return frozenset(tainted)


def _bind_fields(node: cst.CSTNode, state: FlowState, classify) -> FlowState | None:
    """``metadata.page_table = <value>``: the field takes the value's units."""
    if not isinstance(node, cst.Assign):
        return None
    out = state
    for target in node.targets:
        name = dotted(target.target)
        if name is None:
            continue
        hits = tainted_parts(node.value, state, classify)
        out = out.bind([name], bool(hits), (hits[0], node) if hits else ())
    return out if out is not state else None
