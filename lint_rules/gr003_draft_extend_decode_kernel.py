"""GR003 draft-extend-routed-to-decode-kernel (SGLang #24856)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .dataflow import target_names
from .graph_metadata_names import DECODE_KERNELS, METADATA_METHODS, draft_extend_modes, matches, mode_predicates
from .rule import Finding, Invalid, LintRule, ModuleContext, Valid, callee_name, iter_calls

_MODE_NAMES = {"v1": "DRAFT_EXTEND", "v2": "DRAFT_EXTEND_V2"}


class DraftExtendRoutedToDecodeKernel(LintRule):
    """A draft-extend batch goes to a fixed-``q_len`` decode kernel without draft-extend metadata.

    What it does:
        In an attention backend's forward-time methods (``forward_extend``, ...), finds a
        branch taken for ``forward_mode.is_draft_extend*()`` (alone, or combined as in
        ``is_target_verify() or is_draft_extend_v2()``, directly or through a local flag
        such as ``uses_decode_kernel = ...``) that calls a decode kernel assuming one
        uniform ``q_len_per_req`` (``trtllm_batch_decode_with_kv_cache[_mla]``, ``xqa*``,
        ``_run_fixed_q_len_decode``-style helpers, or a ``self`` helper that calls one).
        It reports the call only when no metadata method of the class
        (``init_forward_metadata*``, ``*_metadata``, CUDA-graph ``_build_*`` /
        ``_apply_*`` bodies) has a branch dedicated to that draft-extend mode: a test
        made only of forward-mode predicates. A generic extend branch such as
        ``if any(extend_prefix_lens) or is_draft_extend_v2():`` builds extend-shaped
        metadata and does not count.

    Why is this bad?
        Draft extend carries a variable number of accepted tokens per request. The
        decode kernel reads ``q_len_per_req`` rows per request and a ``seq_lens`` that
        already counts them; extend-shaped metadata (``cu_seqlens_q`` from a cumsum,
        KV-only ``cache_seqlens``) makes it read other requests' queries or past the
        page table: an illegal memory access on Blackwell (SGLang #24566, reverted by
        #24856; re-landed in #28241 once draft-extend metadata was built per mode).

    Example:
        if forward_mode.is_target_verify() or forward_mode.is_draft_extend_v2():
            o = trtllm_batch_decode_with_kv_cache(
                ..., q_len_per_req=self.forward_metadata.max_seq_len_q)
        # ... while init_forward_metadata only has `elif is_target_verify():`

    Use instead:
        Build decode-shaped metadata for the mode (uniform ``num_tokens_per_req``
        stride, ``seq_lens`` including the new tokens) in a dedicated
        ``elif forward_mode.is_draft_extend_v2():`` branch, or keep draft extend on the
        context kernel.
    """

    CODE = "GR003"
    NAME = "draft-extend-routed-to-decode-kernel"
    MESSAGE = "draft-extend batch routed to a fixed-q_len decode kernel (SGLang #24856):"
    WORDS = ("is_draft_extend", "forward_extend")
    #: Kernels that assume a uniform ``q_len_per_req`` (fnmatch patterns).
    DECODE_KERNELS: tuple[str, ...] = DECODE_KERNELS
    #: Methods whose branches count as building metadata for a mode (fnmatch patterns).
    METADATA_METHODS: tuple[str, ...] = METADATA_METHODS

    VALID = [
        Valid(  # the re-landed form (#28241): the metadata has a draft-extend-v2 branch
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)
                    elif forward_batch.forward_mode.is_draft_extend_v2():
                        self.forward_metadata = self._draft_extend_metadata(forward_batch)
                    else:
                        self.forward_metadata = self._extend_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    uses_decode_kernel = (
                        forward_batch.forward_mode.is_target_verify()
                        or forward_batch.forward_mode.is_draft_extend_v2()
                    )
                    if uses_decode_kernel:
                        return self._run_fixed_q_len_decode(q, q_len_per_req=self.forward_metadata.max_seq_len_q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
        Valid(  # a CUDA-graph metadata body with a dedicated draft-extend branch counts
            """
            class TRTLLMMLABackend(FlashInferMLAAttnBackend):
                def _apply_cuda_graph_metadata(self, bs, forward_mode, spec_info):
                    if forward_mode.is_target_verify():
                        self._verify(bs)
                    elif forward_mode.is_draft_extend(include_v2=True):
                        self._draft_extend(bs, spec_info)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if forward_batch.forward_mode.is_draft_extend(include_v2=True):
                        return flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla(query=q)
                    return trtllm_ragged_attention_deepseek(query=q)
            """
        ),
        Valid(  # draft extend stays on the context kernel (#24856's fix)
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        return trtllm_batch_decode_with_kv_cache(query=q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
        Valid(  # the negated test: the decode kernel runs for everything but draft extend
            """
            class FooBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    if not forward_batch.forward_mode.is_draft_extend_v2():
                        return trtllm_batch_decode_with_kv_cache(query=q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
    ]
    INVALID = [
        Invalid(  # SGLang #24566 as #24856 reverted it
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)
                    elif any(forward_batch.extend_prefix_lens_cpu) or forward_batch.forward_mode.is_draft_extend_v2():
                        self.forward_metadata = self._extend_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if (
                        forward_batch.forward_mode.is_target_verify()
                        or forward_batch.forward_mode.is_draft_extend_v2()
                    ):
                        o = flashinfer.decode.trtllm_batch_decode_with_kv_cache(
                            query=q, q_len_per_req=self.forward_metadata.max_seq_len_q
                        )
                    else:
                        o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(query=q)
                    return o
            """,
            line=13,
        ),
        Invalid(  # through a local flag and a private fixed-q_len helper
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    use_decode = forward_batch.forward_mode.is_draft_extend(include_v2=True)
                    if use_decode:
                        return self._decode(q)
                    return trtllm_batch_context_with_kv_cache(query=q)

                def _decode(self, q):
                    return xqa_batch_decode_with_kv_cache(query=q)
            """,
            line=9,
        ),
    ]

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            covered: set[str] | None = None  # computed on the first routing branch
            for fn in methods.values():
                name = fn.name.value
                if not self.config.is_forward_method(name):
                    continue
                for routed, call, kernel in self._routings(fn, methods, ctx):
                    if covered is None:
                        covered = self._covered_modes(methods)
                    missing = routed - covered
                    if not missing:
                        continue
                    modes = " / ".join(_MODE_NAMES[m] for m in sorted(missing))
                    findings.append(
                        self.finding(
                            ctx,
                            call,
                            fn,
                            f"{cls.name.value}.{name}",
                            f"{modes} reaches `{kernel}()` but no metadata method of "
                            f"`{cls.name.value}` has a branch for {modes}; build decode-shaped "
                            "metadata for the mode or keep it on the context kernel.",
                        )
                    )
        return findings

    # -- routing: draft-extend branches in forward methods that call a decode kernel --

    def _routings(
        self, fn: cst.FunctionDef, methods: dict[str, cst.FunctionDef], ctx: ModuleContext
    ) -> list[tuple[frozenset[str], cst.Call, str]]:
        """(modes, decode call, kernel name) per draft-extend branch of ``fn``; memoized on
        the file's context, since GR004 asks the same question."""
        key = ("draft-extend-routings", id(fn))
        if key not in ctx.memo:
            found: list[tuple[frozenset[str], cst.Call, str]] = []
            # every draft-extend predicate (and flag bound to one) names the mode
            if "draft_extend" in ctx.method_text(fn):
                found = list(self._find_routings(fn, methods))
            ctx.memo[key] = found
        return ctx.memo[key]  # type: ignore[return-value]

    def _find_routings(
        self, fn: cst.FunctionDef, methods: dict[str, cst.FunctionDef]
    ) -> Iterator[tuple[frozenset[str], cst.Call, str]]:
        flags = self._mode_flags(fn)
        for stmt in _iter_ifs(fn.body):
            test = stmt.test
            negated = isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not)
            inner = test.expression if negated else test
            routed = self._test_modes(inner, flags)
            if not routed:
                continue
            branch: cst.CSTNode | None = stmt.body
            if negated:
                branch = stmt.orelse if isinstance(stmt.orelse, cst.Else) else None
            if branch is None:
                continue
            hit = self._first_decode_call(branch, methods)
            if hit is not None:
                yield routed, hit[0], hit[1]

    def _mode_flags(self, fn: cst.FunctionDef) -> dict[str, frozenset[str]]:
        """Local names bound to a draft-extend test: ``uses_decode_kernel = ... or is_draft_extend_v2()``."""
        flags: dict[str, frozenset[str]] = {}

        class _Assigns(cst.CSTVisitor):
            def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
                return node is fn

            def visit_Assign(self, node: cst.Assign) -> None:
                modes = _positive_modes(node.value)
                for t in node.targets:
                    for n in target_names(t.target):
                        if modes:
                            flags[n] = modes
                        else:
                            flags.pop(n, None)

        fn.visit(_Assigns())
        return flags

    @staticmethod
    def _test_modes(test: cst.BaseExpression, flags: dict[str, frozenset[str]]) -> frozenset[str]:
        modes = set(_positive_modes(test))
        for node in _positive_names(test):
            modes |= flags.get(node, frozenset())
        return frozenset(modes)

    def _is_decode_kernel(self, name: str | None) -> bool:
        return name is not None and matches(name, self.DECODE_KERNELS)

    def _first_decode_call(
        self, branch: cst.CSTNode, methods: dict[str, cst.FunctionDef]
    ) -> tuple[cst.Call, str] | None:
        for call in iter_calls(branch):
            name = callee_name(call)
            if self._is_decode_kernel(name):
                return call, name or "?"
            helper = _self_method(call, methods)
            if helper is not None:
                for inner in iter_calls(helper.body):
                    inner_name = callee_name(inner)
                    if self._is_decode_kernel(inner_name):
                        return call, f"self.{helper.name.value}() -> {inner_name}"
        return None

    # -- coverage: metadata methods with a branch dedicated to a draft-extend mode --

    def _covered_modes(self, methods: dict[str, cst.FunctionDef]) -> set[str]:
        covered: set[str] = set()
        for name, fn in methods.items():
            if not matches(name, self.METADATA_METHODS) or self.config.is_forward_method(name):
                continue
            for stmt in _iter_ifs(fn.body):
                if _is_mode_only_test(stmt.test):
                    covered |= _positive_modes(stmt.test)
        return covered


def _self_method(call: cst.Call, methods: dict[str, cst.FunctionDef]) -> cst.FunctionDef | None:
    func = call.func
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self":
        return methods.get(func.attr.value)
    return None


def _iter_ifs(node: cst.CSTNode) -> list[cst.If]:
    """Every ``if`` / ``elif`` inside ``node``, not inside nested functions or classes."""
    found: list[cst.If] = []

    class _Ifs(cst.CSTVisitor):
        def visit_If(self, stmt: cst.If) -> None:
            found.append(stmt)

        def visit_FunctionDef(self, _: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, _: cst.ClassDef) -> bool:
            return False

    node.visit(_Ifs())
    return found


def _disjuncts(expr: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(expr, cst.BooleanOperation) and isinstance(expr.operator, cst.Or):
        return [*_disjuncts(expr.left), *_disjuncts(expr.right)]
    return [expr]


def _positive_modes(expr: cst.CSTNode) -> frozenset[str]:
    """Draft-extend modes of the predicates in ``expr`` that are not negated."""
    negated: set[int] = set()

    class _Nots(cst.CSTVisitor):
        def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
            if isinstance(node.operator, cst.Not):
                negated.update(id(c) for _, c in mode_predicates(node.expression))

    expr.visit(_Nots())
    modes: set[str] = set()
    for word, call in mode_predicates(expr):
        if id(call) not in negated:
            modes |= draft_extend_modes(word)
    return frozenset(modes)


def _positive_names(expr: cst.CSTNode) -> list[str]:
    """Plain names in ``expr`` not under ``not`` (local flags)."""
    names: list[str] = []

    class _Names(cst.CSTVisitor):
        def visit_UnaryOperation(self, node: cst.UnaryOperation) -> bool:
            return not isinstance(node.operator, cst.Not)

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            return False

        def visit_Call(self, node: cst.Call) -> bool:
            return False

        def visit_Name(self, node: cst.Name) -> None:
            names.append(node.value)

    expr.visit(_Names())
    return names


def _is_mode_only_test(test: cst.BaseExpression) -> bool:
    """Every ``or``-disjunct of the test is a forward-mode predicate (a dedicated branch)."""
    parts = _disjuncts(test)
    return bool(_positive_modes(test)) and all(mode_predicates(p) for p in parts)
