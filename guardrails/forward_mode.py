"""Forward modes of a serving-engine batch, as seen by the attention backend.

Values are the lower-case mode names (``ForwardMode.DRAFT_EXTEND_V2.value ==
"draft_extend_v2"``). :meth:`ForwardMode.parse` also accepts the upper-case
names and any enum member whose ``.name`` matches, so SGLang's own
``forward_batch.forward_mode`` (an ``IntEnum``) converts directly::

    AttentionBatch(forward_mode=forward_batch.forward_mode, ...)

The query layout each mode produces decides which FMHA kernel may run it:

* uniform query length per request (every request has exactly
  ``q_len_per_req`` query rows): DECODE (1 row) and TARGET_VERIFY
  (``speculative_num_draft_tokens`` rows). These may go to the *decode*
  kernels (trtllm-gen decode, xqa, FlashInfer batch decode), which take a
  scalar ``q_len_per_req`` and ignore ``cu_seqlens_q``.
* ragged query length (per-request lengths come from ``cu_seqlens_q``):
  EXTEND, MIXED, DRAFT_EXTEND and DRAFT_EXTEND_V2 (variable accept lengths).
  These need the *prefill*/context kernels. Routing DRAFT_EXTEND_V2 to the
  decode kernel was SGLang #24856.
* IDLE: a DP-attention rank with no requests this step; the launch is empty.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = ["ForwardMode", "Kernel"]


class ForwardMode(str, Enum):
    """Forward mode of the batch (mirrors SGLang's ``ForwardMode`` names).

    Values are lower-case names; see the module docstring for which modes
    have a uniform query length.
    """

    EXTEND = "extend"
    """Prefill / chunked prefill: ragged new tokens on top of cached prefixes."""
    MIXED = "mixed"
    """Chunked prefill mixed with decode requests in one batch (ragged)."""
    DECODE = "decode"
    """One new query token per request."""
    TARGET_VERIFY = "target_verify"
    """Speculative decoding: the target model scores ``q_len_per_req`` draft
    tokens per request (uniform)."""
    DRAFT_EXTEND = "draft_extend"
    """Speculative decoding (v1): draft model re-extends accepted tokens;
    variable accept lengths (ragged)."""
    DRAFT_EXTEND_V2 = "draft_extend_v2"
    """Speculative decoding (v2): as DRAFT_EXTEND, variable accept lengths
    (ragged) outside CUDA graphs. Source of SGLang #24856."""
    IDLE = "idle"
    """DP attention: this rank has no requests; batch size 0."""

    @classmethod
    def parse(cls, value: Any) -> "ForwardMode":
        """Convert ``value`` to a :class:`ForwardMode`.

        Accepts a member, its value (``"draft_extend_v2"``), its name
        (``"DRAFT_EXTEND_V2"``), or any enum member with a matching ``.name``
        (e.g. ``sglang...ForwardMode.TARGET_VERIFY``).

        Raises:
            ValueError: no forward mode matches; the message lists the valid ones.
        """
        if isinstance(value, cls):
            return value
        name = getattr(value, "name", value) if isinstance(value, Enum) else value
        if isinstance(name, str):
            key = name.strip()
            for member in cls:
                if key == member.value or key.upper() == member.name:
                    return member
        valid = ", ".join(m.name for m in cls)
        raise ValueError(f"unknown forward mode {value!r}; expected one of {valid}")

    @classmethod
    def _missing_(cls, value: object):  # lets ForwardMode("DECODE") and pydantic accept names
        try:
            return cls.parse(value)
        except ValueError:
            return None

    def is_uniform_q_len(self) -> bool:
        """True when every request has the same number of query rows
        (DECODE, TARGET_VERIFY; IDLE trivially, having no requests), so a
        decode kernel taking a scalar ``q_len_per_req`` can run it."""
        return self in (ForwardMode.DECODE, ForwardMode.TARGET_VERIFY, ForwardMode.IDLE)

    def is_ragged(self) -> bool:
        """True when per-request query lengths vary and must come from
        ``cu_seqlens_q`` (EXTEND, MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2)."""
        return not self.is_uniform_q_len()

    def is_idle(self) -> bool:
        """True for IDLE (an empty DP-attention launch)."""
        return self is ForwardMode.IDLE

    # SGLang's ``ForwardMode`` predicates, so a backend written against this enum reads
    # like an SGLang backend (and the lint rules, which match ``is_draft_extend*()`` /
    # ``is_target_verify()`` calls, see its routing).

    def is_extend(self) -> bool:
        """SGLang's ``is_extend()``: the batch goes through ``forward_extend`` (EXTEND,
        MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2 and TARGET_VERIFY), not ``forward_decode``."""
        return self not in (ForwardMode.DECODE, ForwardMode.IDLE)

    def is_decode(self) -> bool:
        """True for DECODE (one query row per request)."""
        return self is ForwardMode.DECODE

    def is_mixed(self) -> bool:
        """True for MIXED."""
        return self is ForwardMode.MIXED

    def is_target_verify(self) -> bool:
        """True for TARGET_VERIFY (uniform ``q_len_per_req`` draft tokens)."""
        return self is ForwardMode.TARGET_VERIFY

    def is_draft_extend(self, include_v2: bool = False) -> bool:
        """True for DRAFT_EXTEND (and DRAFT_EXTEND_V2 when ``include_v2``), as SGLang."""
        if include_v2:
            return self in (ForwardMode.DRAFT_EXTEND, ForwardMode.DRAFT_EXTEND_V2)
        return self is ForwardMode.DRAFT_EXTEND

    def is_draft_extend_v2(self) -> bool:
        """True for DRAFT_EXTEND_V2 (variable accept lengths, ragged)."""
        return self is ForwardMode.DRAFT_EXTEND_V2


class Kernel(str, Enum):
    """Which family of FMHA kernel the launch goes to.

    * ``decode``: kernels that take a scalar ``q_len_per_req`` and reshape the
      query as ``[batch_size, q_len_per_req, ...]``: FlashInfer
      ``trtllm_batch_decode_with_kv_cache`` (trtllm-gen), ``xqa_batch_decode_with_kv_cache``,
      ``BatchDecodeWithPagedKVCacheWrapper``. They ignore ``cu_seqlens_q``.
    * ``prefill``: ragged kernels that read per-request query offsets from
      ``cu_seqlens_q`` / ``qo_indptr``: ``trtllm_batch_context_with_kv_cache``,
      ``BatchPrefillWithPagedKVCacheWrapper`` (fa2/fa3), FA3 varlen.
    """

    DECODE = "decode"
    PREFILL = "prefill"
