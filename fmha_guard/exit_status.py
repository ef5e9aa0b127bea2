"""The command's exit statuses, and the error that means "bad input" (status 2)."""

from __future__ import annotations

#: No findings / findings (with ``--baseline``: new ones; with ``--diff``: a fix to show) /
#: usage or internal error.
EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit status 2."""
