"""GR002 stale-kv-pool-state (SGLang #26966)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .dataflow import FlowState, FlowWalker, taint_chain, tainted_parts
from .kv_pool_facts import assignment_parts, is_plain_alias, make_classifier, pool_reading_helpers
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid

#: A backend whose ``__init__`` stores ``self._swa_kv_pool`` from a ``self`` resolver;
#: ``{resolver}`` is the resolver's body.
_RESOLVED_IN_INIT = """
class {backend}(AttentionBackend):
    def __init__(self, model_runner):
        self._swa_kv_pool = self._resolve_swa_kv_pool(model_runner)

    @staticmethod
    def _resolve_swa_kv_pool(model_runner):
{resolver}
"""


def _resolved_in_init(backend: str, resolver: str) -> str:
    """:data:`_RESOLVED_IN_INIT` for class ``backend`` with ``resolver`` (any indentation)."""
    body = textwrap.indent(textwrap.dedent(resolver).strip("\n"), " " * 8)
    return _RESOLVED_IN_INIT.replace("{backend}", backend).replace("{resolver}", body)


class StaleKvPoolState(LintRule):
    """`__init__` caches a fact of `model_runner.token_to_kv_pool` that a pool swap changes.

    ## What it does
    In an attention backend's `__init__`, flags a `self.*` attribute assigned a value
    derived from `model_runner.token_to_kv_pool`: an `isinstance` test of it, the pool
    bound under another attribute name, a wrapper or translator built from it, a local
    alias of it, or the result of a `self` helper that reads it. The plain alias
    `self.token_to_kv_pool = model_runner.token_to_kv_pool` is the engine's swap point
    and is not flagged; immutable facts (dtype, head counts, head dims, page size) are
    not flagged; a resolver that also consults the draft worker's swap
    (`is_frozen_kv_mtp`, `token_to_kv_pool_allocator`) is trusted.

    ## Why is this bad?
    The backend is built once, but the pool it was built against is not forever:
    SGLang's draft worker (FROZEN_KV MTP) swaps `token_to_kv_pool` for the target's
    pool after construction. A cached `isinstance(pool, SWAKVPool)` or a cached SWA
    translator then describes the wrong pool, and SWA page ids run past the pool the
    kernel reads (SGLang #26966).

    ## Known problems
    Only `__init__` is checked, and `self` helpers one level deep; state cached by
    another one-time setup method, or built outside the class, is not seen. Whether a
    fact is immutable is decided by its name (`extra-immutable-pool-facts`).

    ## Example
    ```python
    def __init__(self, model_runner):
        self.use_sliding_window_kv_pool = isinstance(model_runner.token_to_kv_pool, SWAKVPool)
    ```

    ## Use instead
    Keep only the swap point and decide at forward time:
    ```python
    def __init__(self, model_runner):
        self.token_to_kv_pool = model_runner.token_to_kv_pool

    def _swa_pool(self, forward_batch):
        pool = forward_batch.token_to_kv_pool
        return pool if isinstance(pool, SWAKVPool) else None
    ```

    ## Options
    - `extra-pool-attributes`: more model-runner attributes that name the swappable pool.
    - `extra-swap-points`: more `self.<name> = model_runner.<name>` aliases kept current.
    - `extra-immutable-pool-facts`: more pool facts that a swap never changes.
    - `extra-swap-aware-markers`: more names that show a resolver handles the swap.

    ## References
    - [SGLang #26966](https://github.com/sgl-project/sglang/pull/26966): the SWA pool is
      decided from the live pool, not cached in `__init__`.
    - [SGLang #27491](https://github.com/sgl-project/sglang/pull/27491): a resolver that
      handles the draft worker's swap.
    """

    CODE = "GR002"
    NAME = "stale-kv-pool-state"
    MESSAGE = "`__init__` caches state of the swappable KV pool (SGLang #26966):"
    WORDS = ("__init__",)
    #: The strict form (GR102) keeps the plain alias and immutable facts.
    STRICT = False

    VALID = [
        Valid(
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.token_to_kv_pool = model_runner.token_to_kv_pool
                    self.kv_cache_dtype = model_runner.token_to_kv_pool.dtype
                    self.page_size = model_runner.token_to_kv_pool.page_size
                    self.head_dim = getattr(model_runner.token_to_kv_pool, "head_dim", 128)
            """
        ),
        Valid(  # decided at forward time from the live pool
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.token_to_kv_pool = getattr(model_runner, "token_to_kv_pool", None)

                def forward_decode(self, q, k, v, layer, forward_batch):
                    use_swa = isinstance(forward_batch.token_to_kv_pool, SWAKVPool)
            """
        ),
        Valid(  # a resolver that handles the draft worker's swap (SGLang #27491)
            _resolved_in_init(
                "TRTLLMHAAttnBackend",
                """
                active_pool = model_runner.token_to_kv_pool
                if isinstance(active_pool, SWAKVPool):
                    return active_pool
                if model_runner.is_draft_worker and not model_runner.spec_algorithm.is_frozen_kv_mtp():
                    return None
                kvcache = model_runner.token_to_kv_pool_allocator.get_kvcache()
                return kvcache if isinstance(kvcache, SWAKVPool) else None
                """,
            )
        ),
        Valid(  # not in __init__
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    self.use_swa = isinstance(forward_batch.token_to_kv_pool, SWAKVPool)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.use_sliding_window_kv_pool = isinstance(
                        model_runner.token_to_kv_pool, SWAKVPool
                    )
            """,
            line=3,
        ),
        Invalid(  # the pool under another attribute name, through a local alias
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    pool = model_runner.token_to_kv_pool
                    self.swa_pool = pool if isinstance(pool, SWAKVPool) else None
            """,
            line=4,
        ),
        Invalid(  # a wrapper built from the pool
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.token_to_kv_pool = model_runner.token_to_kv_pool
                    self.translator = SWAIndexTranslator(self.token_to_kv_pool)
            """,
            line=4,
        ),
        Invalid(  # through a helper that reads the pool
            _resolved_in_init(
                "FooBackend",
                """
                pool = model_runner.token_to_kv_pool
                return pool if isinstance(pool, SWAKVPool) else None
                """,
            ),
            line=3,
        ),
    ]

    def words(self) -> tuple[str, ...]:
        return (*self.WORDS, *self.config.pool_words)

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            init = next((fn for fn in iter_methods(cls) if fn.name.value == "__init__"), None)
            if init is not None:
                findings.extend(self._check_init(ctx, cls, init))
        return findings

    def _check_init(self, ctx: ModuleContext, cls: cst.ClassDef, init: cst.FunctionDef) -> list[Finding]:
        findings: list[Finding] = []
        classify = make_classifier(
            self.config, pool_reading_helpers(cls, self.config), sanitize=not self.STRICT
        )

        def on_statement(node: cst.CSTNode, state: FlowState) -> None:
            parts = assignment_parts(node)
            if parts is None:
                return
            targets, value = parts
            sources = tainted_parts(value, state, classify)
            if not sources:
                return
            flagged = [
                t for t in targets if self.STRICT or not is_plain_alias(t, value, self.config)
            ]
            if flagged:
                names = ", ".join(f"`self.{t.attr.value}`" for t in flagged)
                detail = (
                    f"{names} derived from `{ctx.code(sources[0])}`; a draft worker can swap "
                    "the pool after construction. Decide it at forward time from "
                    "`forward_batch.token_to_kv_pool`."
                )
                evidence = ctx.evidence_chain("pool read", taint_chain(value, state, classify), init)
                evidence.append(ctx.evidence("cached as", node, init))
                findings.append(self.finding(ctx, flagged[0], init, detail, evidence=evidence))

        FlowWalker(classify, on_statement).run(init.body.body, FlowState())
        return findings
