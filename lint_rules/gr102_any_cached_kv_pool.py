"""GR102 kv-pool-read-in-init (opt-in strict form of GR002)."""

from __future__ import annotations

from .gr002_stale_kv_pool_state import StaleKvPoolState
from .rule import Invalid, Valid


class KvPoolReadInInit(StaleKvPoolState):
    """Any ``self.*`` assignment in ``__init__`` whose value reads ``token_to_kv_pool`` (opt-in).

    What it does:
        The strict form of GR002: flags every ``self.*`` attribute assigned from
        ``model_runner.token_to_kv_pool`` in an attention backend's ``__init__``, the
        plain alias and immutable facts included. Select it with ``--select GR102``.

    Why is this bad?
        Teams that want no pool state cached at construction (SGLang #26966) ban the
        pattern outright: the backend then reads ``forward_batch.token_to_kv_pool``,
        which the engine keeps current across draft/target swaps.

    Example:
        self.token_to_kv_pool = model_runner.token_to_kv_pool

    Use instead:
        Read ``forward_batch.token_to_kv_pool`` where the pool is used.
    """

    CODE = "GR102"
    NAME = "kv-pool-read-in-init"
    MESSAGE = "`__init__` stores a value read from the swappable KV pool (strict form of GR002):"
    DEFAULT_ENABLED = False
    STRICT = True

    VALID = [
        Valid(
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.page_size = model_runner.page_size
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.token_to_kv_pool = model_runner.token_to_kv_pool
            """,
            line=3,
        ),
        Invalid(
            """
            class FooBackend(AttentionBackend):
                def __init__(self, model_runner):
                    self.kv_cache_dtype = model_runner.token_to_kv_pool.dtype
            """,
            line=3,
        ),
    ]
