"""GR102 kv-pool-read-in-init (opt-in strict form of GR002)."""

from __future__ import annotations

from .gr002_stale_kv_pool_state import StaleKvPoolState
from .rule_info import Invalid, Valid


class KvPoolReadInInit(StaleKvPoolState):
    """Any `self.*` assignment in `__init__` whose value reads `token_to_kv_pool` (opt-in).

    ## What it does
    The strict form of GR002: flags every `self.*` attribute assigned from
    `model_runner.token_to_kv_pool` in an attention backend's `__init__`, the plain
    alias and immutable facts included. Select it with `--select GR102`.

    ## Why is this bad?
    Teams that want no pool state cached at construction (SGLang #26966) ban the
    pattern outright: the backend then reads `forward_batch.token_to_kv_pool`, which the
    engine keeps current across draft/target swaps.

    ## Known problems
    Like GR002, only `__init__` and its `self` helpers are checked. A resolver that
    consults the draft worker's swap is still trusted.

    ## Example
    ```python
    def __init__(self, model_runner):
        self.token_to_kv_pool = model_runner.token_to_kv_pool
    ```

    ## Use instead
    Read the pool where it is used:
    ```python
    def forward_decode(self, q, k, v, layer, forward_batch):
        pool = forward_batch.token_to_kv_pool
    ```

    ## Options
    - `extra-pool-attributes`: more model-runner attributes that name the swappable pool.
    - `extra-swap-aware-markers`: more names that show a resolver handles the swap.

    ## References
    - [SGLang #26966](https://github.com/sgl-project/sglang/pull/26966): the SWA pool
      cached in `__init__`.
    """

    CODE = "GR102"
    NAME = "kv-pool-read-in-init"
    MESSAGE = "`__init__` stores a value read from the swappable KV pool (strict form of GR002):"
    DEFAULT_ENABLED = False
    STRICT = True

    #: What GR002 lets through in ``__init__`` (the swap point, immutable facts, a
    #: ``getattr`` of the pool) is what the strict form flags.
    INVALID = [Invalid(example.code, line=3) for example in StaleKvPoolState.VALID[:2]]
    VALID = [
        Valid(  # nothing read from the pool
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.page_size = model_runner.page_size
            """
        ),
    ]
