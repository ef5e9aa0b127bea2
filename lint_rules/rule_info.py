"""What every rule states about itself: code, name, message, examples, and its documentation.

Kept free of libcst, so that the suppression pseudo-rules (GR900 / GR901) and the
command's rule listing load without the parser.

A rule's documentation is its class docstring, in one Markdown format (ruff's): a
one-line summary, then these sections, each an ``## `` heading, in this order::

    ## What it does        what is flagged, and where the rule looks
    ## Why is this bad?    what goes wrong at the kernel
    ## Known problems      what the analysis does not see
    ## Example             a fenced ```python block
    ## Use instead         a fenced ```python block
    ## Options             the ``extra-*`` config keys that change the rule, or "None."
    ## References          the SGLang pull requests

:meth:`RuleInfo.doc` is the one renderer: ``fmha-guard explain``, ``fmha-guard rules``
(the summary) and SARIF (``fullDescription`` / ``help``) all print what it returns.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

#: The ``## `` headings every rule's documentation has, in order.
DOC_SECTIONS: tuple[str, ...] = (
    "What it does",
    "Why is this bad?",
    "Known problems",
    "Example",
    "Use instead",
    "Options",
    "References",
)


@dataclass(frozen=True)
class Valid:
    """Code the rule must not flag."""

    code: str


@dataclass(frozen=True)
class Invalid:
    """Code the rule must flag (Fixit's name).

    ``line`` (1-based, after dedent) pins the finding; ``expected_replacement`` is the
    whole example after the rule's autofix (``None``: no fix is checked).
    """

    code: str
    line: int | None = None
    expected_replacement: str | None = None


class RuleInfo:
    """The class attributes and documentation shared by lint rules and pseudo-rules."""

    CODE: ClassVar[str]
    NAME: ClassVar[str]
    MESSAGE: ClassVar[str]
    #: Opt-in rules (the strict GR1xx forms) run only when selected.
    DEFAULT_ENABLED: ClassVar[bool] = True
    VALID: ClassVar[list[Valid]] = []
    INVALID: ClassVar[list[Invalid]] = []

    @classmethod
    def doc(cls) -> str:
        """The rule's documentation: its docstring, dedented (Markdown, never indented)."""
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        """The documentation's first line (the message when there is no docstring)."""
        doc = cls.doc()
        return doc.splitlines()[0] if doc else cls.MESSAGE

    @classmethod
    def explanation(cls) -> str:
        """``CODE name``, a blank line, and the documentation (``fmha-guard explain``)."""
        return f"{cls.CODE} {cls.NAME}\n\n{cls.doc()}"


class PseudoRule(RuleInfo):
    """A rule that checks suppression comments rather than code (no libcst visitor).

    The checks themselves live in :mod:`lint_rules.suppressions`; a pseudo-rule's
    examples are linted with every default rule.
    """

    #: A suppression that names its rule and silences that rule's finding: valid for
    #: every pseudo-rule.
    VALID: ClassVar[list[Valid]] = [
        Valid(
            """
            class FooBackend:
                def forward_extend(self, q, k, v, layer, forward_batch):
                    return trtllm_batch_context_with_kv_cache(  # fmha-guard: ignore[GR001] sized by the caller
                        query=q, batch_size=forward_batch.batch_size
                    )
            """
        ),
    ]


def doc_sections(doc: str) -> list[str]:
    """The ``## `` headings of a Markdown documentation, in order (fenced code skipped)."""
    found: list[str] = []
    fenced = False
    for line in doc.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append(line[3:].strip())
    return found
