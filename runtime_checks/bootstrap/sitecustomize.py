"""Arms the runtime guard at interpreter start under ``fmha-guard run``; see :mod:`runtime_checks.bootstrap`.

``site`` imports the first ``sitecustomize`` on ``sys.path``; ``fmha-guard run`` put this
directory first on ``PYTHONPATH``, so this is it. It calls
:func:`runtime_checks.startup.activate` (what the ``.pth`` line calls; a no-op when
that already ran), then takes its directory off ``sys.path`` and imports the next
``sitecustomize`` (a distribution's, a virtual environment's), which ``site`` would
otherwise have run. Standard library only until the guard fires.
"""

import os
import sys


def _arm() -> None:
    try:
        from runtime_checks import startup
    except ImportError as exc:
        print(
            f"fmha-guard run: {sys.executable} cannot import runtime_checks ({exc}); "
            "this process is not guarded (install fmha-guardrails into its environment)",
            file=sys.stderr,
        )
        return
    startup.activate()


def _chain() -> None:
    """Import the ``sitecustomize`` this module shadows, as ``site`` would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    this = sys.modules.pop(__name__)
    try:
        import importlib

        importlib.import_module(__name__)
    except ImportError as exc:
        if exc.name != __name__:
            raise
        sys.modules[__name__] = this  # no other sitecustomize: keep this one imported


if __name__ == "sitecustomize":
    _arm()
    _chain()
