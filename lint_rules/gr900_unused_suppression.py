"""GR900 unused-suppression: a suppression code that suppressed nothing.

A pseudo-rule: the check runs in :func:`lint_rules.suppressions.apply_suppressions`.
"""

from __future__ import annotations

from .rule_info import Invalid, PseudoRule


class UnusedSuppression(PseudoRule):
    """A `# fmha-guard: ignore[...]` code that suppresses no finding.

    ## What it does
    Reports each code of a suppression comment for which the rule ran on the file and
    found nothing on that line or statement.

    ## Why is this bad?
    A stale suppression hides the next real bug on that line.

    ## Known problems
    A code is judged only when its rule ran on the file: a code of an unselected rule,
    or of a rule that `per-path-ignores` switches off there, is left alone.

    ## Example
    ```python
    bs = self.forward_metadata.cu_seqlens_q.shape[0] - 1  # fmha-guard: ignore[GR001]
    ```

    ## Use instead
    Delete the code (or the whole comment):
    ```python
    bs = self.forward_metadata.cu_seqlens_q.shape[0] - 1
    ```

    ## Options
    None (switch it off like any rule: `--ignore GR900`).

    ## References
    - [ruff's unused-noqa (RUF100)](https://docs.astral.sh/ruff/rules/unused-noqa/), the
      model for this check.
    """

    CODE = "GR900"
    NAME = "unused-suppression"
    MESSAGE = "Unused suppression:"

    INVALID = [
        Invalid(
            """
            class FooBackend:
                def forward_extend(self, q, k, v, layer, forward_batch):
                    bs = self.forward_metadata.cu_seqlens_q.shape[0] - 1  # fmha-guard: ignore[GR001]
                    return trtllm_batch_context_with_kv_cache(query=q, batch_size=bs)
            """,
            line=3,
        ),
    ]
