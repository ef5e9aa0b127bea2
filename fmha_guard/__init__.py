"""The ``fmha-guard`` command: audit and lint with :mod:`lint_rules`, list the rules and
the invariant catalog of :mod:`guardrails`.

``python -m fmha_guard`` runs it too; :func:`fmha_guard.cli.main` is the entry point.
Nothing is imported here, so that a cached audit starts fast.
"""
