"""The history ledger: real attention-metadata bugs of SGLang and vLLM, one module per family.

Each family module (``padded``, ``units``, ``pool``, ``graph``, ``mode``) holds a list
``BUGS`` of :class:`~tests.lint_history.ledger.HistoricalBug`: a fix verified in two
published releases (the bug in ``buggy``, the fix in ``fixed``) and the rule that models
it. ``tests/test_lint_history.py`` runs each rule on both releases;
:mod:`tests.lint_history.release_sources` fetches the releases' ``.py`` trees.
"""
