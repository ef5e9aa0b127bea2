"""GR009 cumulative-tail-breaks-monotonicity (vLLM FlashMLA ``num_splits``, vLLM #21691)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import libcst as cst

from .backend_scope import iter_classes, iter_methods
from .cst_analysis import callee_name, iter_nodes
from .rule import Finding, LintRule, ModuleContext, Replacement
from .rule_info import Invalid, Valid

#: A write of zero: ``.fill_(0)`` (torch), ``.fill(0)`` (numpy), ``.zero_()``, ``... = 0``.
_ZERO_WRITE_TEXT = re.compile(r"\.fill_?\(\s*0(?:\.0)?\s*\)|\.zero_\(\)|\]\s*=\s*0(?:\.0)?\s*(?:#|$)", re.MULTILINE)
#: ``self.query_start_loc.np[...]``: the CPU/GPU halves of vLLM's ``CpuGpuBuffer``.
_BUFFER_HALVES = ("np", "cpu", "gpu")


@functools.lru_cache(maxsize=8)
def _tail_zero_text(stems: tuple[str, ...]) -> re.Pattern[str]:
    """``<name>[<start> :<end>]`` then a zero write, on one line: the pre-filter's pattern
    (a pattern's literal part stands for its ``*``: ``*indptr*`` -> ``indptr``)."""
    names = "|".join(re.escape(s) for s in stems if s) or r"(?!)"
    return re.compile(
        rf"(?:{names})\w*(?:\.(?:np|cpu|gpu))?\[[^\]\n]*[\w)]\s*:[^\]\n]*\]\s*"
        rf"(?:\.fill_?\(\s*0(?:\.0)?\s*\)|\.zero_\(\)|=\s*0(?:\.0)?\s*(?:#|$))",
        re.MULTILINE,
    )


def _zero(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Integer) and expr.value == "0" or isinstance(expr, cst.Float) and float(expr.value) == 0.0


def _array_name(expr: cst.BaseExpression) -> str | None:
    """``self.cg_buf_num_splits`` -> ``cg_buf_num_splits``; ``self.qsl.np`` -> ``qsl``; a name as is."""
    if isinstance(expr, cst.Attribute) and expr.attr.value in _BUFFER_HALVES:
        expr = expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    if isinstance(expr, cst.Name):
        return expr.value
    return None


def _tail_start(sub: cst.Subscript) -> cst.BaseExpression | None:
    """The start ``n`` of a tail slice ``x[n:]`` / ``x[n:m]`` (``n`` not 0 / absent), else None."""
    if len(sub.slice) != 1 or not isinstance(sub.slice[0].slice, cst.Slice):
        return None
    part = sub.slice[0].slice
    if part.lower is None or _zero(part.lower) or part.step is not None:
        return None
    return part.lower


def _last_written(array: cst.BaseExpression, start: cst.BaseExpression, module: cst.Module) -> cst.BaseExpression:
    """``array[start - 1]`` (``array[n]`` for ``start = n + 1``): the last element written."""
    if (
        isinstance(start, cst.BinaryOperation)
        and isinstance(start.operator, cst.Add)
        and isinstance(start.right, cst.Integer)
        and start.right.value == "1"
    ):
        index = module.code_for_node(start.left)
    else:
        index = f"{module.code_for_node(start)} - 1"
    return cst.parse_expression(f"{module.code_for_node(array)}[{index}]")


class CumulativeTailBreaksMonotonicity(LintRule):
    """The padded tail of a cumulative offset array is written with 0.

    ## What it does
    Flags a write of zero (`x[n:].fill_(0)`, `x[n:].zero_()`, numpy's `x[n:].fill(0)`,
    `x[n:] = 0`) into the tail `x[n:]` (a slice that starts past element 0) of a
    cumulative array: `cu_seqlens_q` / `cu_seqlens_k`, `qo_indptr`, `kv_indptr`,
    `query_start_loc`, FlashMLA's `num_splits`. The fix repeats the last written value:
    `x[n:].fill_(x[n - 1])`.

    ## Why is this bad?
    These arrays hold prefix sums: kernels read `x[i + 1] - x[i]` as request `i`'s
    length, or the number of splits. Under a CUDA graph the kernels were captured for
    a padded batch and read the whole captured prefix, the padding rows too: a tail of
    zeros after offsets that reached `T` gives the first padding row a length of `-T`,
    so a split-KV combine or a varlen kernel walks memory backwards or far past its
    buffers (illegal memory access, or another request's output overwritten).
    vLLM 0.10.0's FlashMLA builder zeroed the tail of its persistent `num_splits`
    buffer; vLLM 0.10.1 fills it with `num_splits[-1]` ("Num splits needs to
    monotonically increasing", with FlashMLA#3). vLLM's model runner pads
    `query_start_loc` the same way ("pad query_start_loc to be non-decreasing, as
    kernels like FlashAttention requires that").

    ## Known problems
    Only literal zero writes into a tail slice are flagged: a tail filled from another
    computed value is not judged, nor a whole buffer zeroed and then refilled up to `n`
    (that leaves the tail at 0 too, but is as often a reset before a full rewrite).
    Arrays are recognized by name.

    ## Example
    ```python
    num_splits_view = self.cg_buf_num_splits[:n]
    num_splits_view.copy_(num_splits)
    self.cg_buf_num_splits[n:].fill_(0)
    ```

    ## Use instead
    ```python
    num_splits_view = self.cg_buf_num_splits[:n]
    num_splits_view.copy_(num_splits)
    self.cg_buf_num_splits[n:].fill_(self.cg_buf_num_splits[n - 1])
    ```

    ## Options
    - `extra-cumulative-arrays`: more names (fnmatch patterns) of cumulative arrays.

    ## References
    - [vLLM #21691](https://github.com/vllm-project/vllm/pull/21691): fix an illegal
      memory access with FlashMLA full CUDA graphs; `num_splits` is padded with its
      last value (vLLM 0.10.1).
    - [FlashMLA #3 (vLLM fork)](https://github.com/vllm-project/FlashMLA/pull/3): a
      monotonic `num_splits` tail is what makes padded replays safe.
    """

    CODE = "GR009"
    NAME = "cumulative-tail-breaks-monotonicity"
    MESSAGE = "a cumulative array's padded tail is written with 0 (vLLM FlashMLA num_splits):"
    BACKEND_SCOPED = False
    FIXABLE = True

    VALID = [
        Valid(  # vLLM 0.10.1 FlashMLAMetadataBuilder._build_decode: the fix
            """
            class FlashMLAMetadataBuilder(MLACommonMetadataBuilder[FlashMLAMetadata]):
                def _build_decode(self, block_table_tensor, seq_lens):
                    tile_scheduler_metadata, num_splits = get_mla_metadata(seq_lens, self.num_q_heads, 1)
                    n = num_splits.size(0)
                    num_splits_view = self.cg_buf_num_splits[:n]
                    num_splits_view.copy_(num_splits)
                    self.cg_buf_num_splits[n:].fill_(num_splits[-1])
                    return FlashMLADecodeMetadata(block_table=block_table_tensor, num_splits=num_splits_view)
            """
        ),
        Valid(  # vLLM GPUModelRunner._prepare_inputs: the tail repeats the last offset;
            # seq_lens is no cumulative array, and its zero tail is fine
            """
            class GPUModelRunner(LoRAModelRunnerMixin):
                def _prepare_inputs(self, scheduler_output):
                    self.query_start_loc.np[0] = 0
                    self.query_start_loc.np[1 : num_reqs + 1] = cu_num_tokens
                    self.query_start_loc.np[num_reqs + 1 :].fill(cu_num_tokens[-1])
                    self.seq_lens.np[num_reqs:].fill(0)
            """
        ),
        Valid(  # element 0 of an indptr is 0 by definition; a whole-buffer reset is not a tail
            """
            class AiterAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    kv_indptr[:1].zero_()
                    self.qo_indptr[0] = 0
                    self.kv_indptr.zero_()
            """
        ),
    ]
    INVALID = [
        Invalid(  # vLLM 0.10.0 FlashMLAMetadataBuilder._build_decode
            """
            class FlashMLAMetadataBuilder(MLACommonMetadataBuilder[FlashMLAMetadata]):
                def _build_decode(self, block_table_tensor, seq_lens):
                    tile_scheduler_metadata, num_splits = get_mla_metadata(seq_lens, self.num_q_heads, 1)
                    n = num_splits.size(0)
                    num_splits_view = self.cg_buf_num_splits[:n]
                    num_splits_view.copy_(num_splits)
                    self.cg_buf_num_splits[n:].fill_(0)  # fill the rest with 0s
                    return FlashMLADecodeMetadata(block_table=block_table_tensor, num_splits=num_splits_view)
            """,
            line=7,
            expected_replacement="""
            class FlashMLAMetadataBuilder(MLACommonMetadataBuilder[FlashMLAMetadata]):
                def _build_decode(self, block_table_tensor, seq_lens):
                    tile_scheduler_metadata, num_splits = get_mla_metadata(seq_lens, self.num_q_heads, 1)
                    n = num_splits.size(0)
                    num_splits_view = self.cg_buf_num_splits[:n]
                    num_splits_view.copy_(num_splits)
                    self.cg_buf_num_splits[n:].fill_(self.cg_buf_num_splits[n - 1])  # fill the rest with 0s
                    return FlashMLADecodeMetadata(block_table=block_table_tensor, num_splits=num_splits_view)
            """,
        ),
        Invalid(  # an SGLang-style replay padding cu_seqlens_k past the real batch
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.decode_cuda_graph_metadata[bs]
                    metadata.cu_seqlens_k[1 : raw_bs + 1].copy_(torch.cumsum(seq_lens[:raw_bs], dim=0))
                    metadata.cu_seqlens_k[raw_bs + 1 :] = 0
            """,
            line=5,
            expected_replacement="""
            class FooBackend(AttentionBackend):
                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.decode_cuda_graph_metadata[bs]
                    metadata.cu_seqlens_k[1 : raw_bs + 1].copy_(torch.cumsum(seq_lens[:raw_bs], dim=0))
                    metadata.cu_seqlens_k[raw_bs + 1 :] = metadata.cu_seqlens_k[raw_bs]
            """,
        ),
        Invalid(  # numpy half of a CpuGpuBuffer, zeroed with zero_-style fill
            """
            class GPUModelRunner(LoRAModelRunnerMixin):
                def _dummy_run(self, num_tokens):
                    self.query_start_loc.np[1 : num_reqs + 1] = cum_num_tokens
                    self.query_start_loc.np[num_reqs + 1 :].fill(0)
            """,
            line=4,
        ),
    ]

    def wants(self, source: str) -> bool:
        """Only files whose text holds a zero write into a tail slice of a cumulative name."""
        stems = [p.strip("*") for p in self.config.cumulative_arrays]
        if not any(stem in source for stem in stems) or _ZERO_WRITE_TEXT.search(source) is None:
            return False
        return _tail_zero_text(tuple(stems)).search(source) is not None

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_classes(ctx.module.body):
            for fn in iter_methods(cls):
                text = ctx.method_text(fn)
                if _ZERO_WRITE_TEXT.search(text) is None:
                    continue
                for node in iter_nodes(fn.body, (cst.Call, cst.Assign)):
                    hit = self._zero_tail_write(node, ctx)
                    if hit is not None:
                        sub, start, replacement = hit
                        name = _array_name(sub.value)
                        findings.append(
                            self.finding(
                                ctx,
                                node,
                                fn,
                                f"`{ctx.code(sub)}` is zeroed after `{name}` counted up to element "
                                f"`{ctx.code(start)}`; a kernel that reads the padded rows sees "
                                f"offsets fall back to 0 (negative lengths). Repeat the last value: "
                                f"`{ctx.code(sub)}` = `{ctx.code(_last_written(sub.value, start, ctx.module))}`.",
                                replacement=replacement,
                                evidence=[ctx.evidence("tail write", node, fn)],
                            )
                        )
        return findings

    def _cumulative(self, sub: cst.Subscript) -> bool:
        name = _array_name(sub.value)
        return name is not None and self.config.is_cumulative_array(name)

    def _zero_tail_write(
        self, node: cst.CSTNode, ctx: ModuleContext
    ) -> tuple[cst.Subscript, cst.BaseExpression, Replacement] | None:
        if isinstance(node, cst.Assign):
            if len(node.targets) != 1 or not _zero(node.value):
                return None
            sub = node.targets[0].target
            if not isinstance(sub, cst.Subscript) or not self._cumulative(sub):
                return None
            start = _tail_start(sub)
            if start is None:
                return None
            return sub, start, Replacement(node, node.with_changes(value=_last_written(sub.value, start, ctx.module)))
        assert isinstance(node, cst.Call)
        name = callee_name(node)
        if not isinstance(node.func, cst.Attribute) or not isinstance(node.func.value, cst.Subscript):
            return None
        if name == "zero_" and not node.args:
            new_name = "fill_"
        elif name in ("fill_", "fill") and len(node.args) == 1 and _zero(node.args[0].value):
            new_name = name
        else:
            return None
        sub = node.func.value
        if not self._cumulative(sub):
            return None
        start = _tail_start(sub)
        if start is None:
            return None
        fixed = node.with_changes(
            func=node.func.with_changes(attr=cst.Name(new_name)),
            args=[cst.Arg(_last_written(sub.value, start, ctx.module))],
        )
        return sub, start, Replacement(node, fixed)
