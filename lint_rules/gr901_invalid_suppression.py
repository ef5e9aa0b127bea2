"""GR901 invalid-suppression: a ``# fmha-guard:`` comment that is not ``ignore[CODE,...] reason``.

A pseudo-rule: the check runs in :func:`lint_rules.suppressions.apply_suppressions`.
"""

from __future__ import annotations

from .rule_info import Invalid, PseudoRule


class InvalidSuppression(PseudoRule):
    """A `# fmha-guard:` comment that is not `ignore[CODE,...] reason`.

    ## What it does
    Reports a bare `# fmha-guard: ignore` (no codes), an empty or malformed code list,
    an unknown directive, an unknown rule code, or a pseudo-rule's code. Such a comment
    suppresses nothing.

    ## Why is this bad?
    A blanket suppression would silence every current and future rule on the line; a
    typo would silently suppress nothing.

    ## Known problems
    Comments are read with the tokenizer: a file that does not tokenize has no
    suppressions at all (its parse error is reported instead).

    ## Example
    ```python
    out = trtllm_batch_context_with_kv_cache(  # fmha-guard: ignore
        query=q, batch_size=forward_batch.batch_size
    )
    ```

    ## Use instead
    Name the rules, and say why:
    ```python
    out = trtllm_batch_context_with_kv_cache(  # fmha-guard: ignore[GR001] checked by the caller
        query=q, batch_size=forward_batch.batch_size
    )
    ```

    ## Options
    None (switch it off like any rule: `--ignore GR901`).

    ## References
    - [ruff's blanket-noqa (PGH004)](https://docs.astral.sh/ruff/rules/blanket-noqa/), the
      model for requiring codes.
    """

    CODE = "GR901"
    NAME = "invalid-suppression"
    MESSAGE = "Invalid suppression:"

    INVALID = [
        Invalid("x = 1  # fmha-guard: ignore[GR999] no such rule", line=1),  # an unknown code
        Invalid(  # bare: codes are required, so it suppresses nothing
            """
            class FooBackend:
                def forward_extend(self, q, k, v, layer, forward_batch):
                    bs = forward_batch.batch_size  # fmha-guard: ignore
                    return trtllm_batch_context_with_kv_cache(query=q, batch_size=bs)
            """,
            line=3,
        ),
    ]
