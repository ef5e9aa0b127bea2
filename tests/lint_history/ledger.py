"""One real bug of an engine's history, verified in published releases, and the rule that models it.

Every family module of this package (``tests/lint_history/<family>.py``) holds a module-level
list ``BUGS`` of :class:`HistoricalBug`; :func:`all_bugs` collects them all for
``tests/test_lint_history.py``, which asserts that ``rule`` reports at least one finding inside
``function`` of ``path`` in release ``buggy`` and none there in release ``fixed``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

#: engine name -> the top-level package of its wheel (``path`` starts with it)
ENGINES = {"sglang": "sglang", "vllm": "vllm"}
#: modules of this package that are machinery, not a family's ledger
NOT_LEDGERS = frozenset({"ledger", "release_sources"})


@dataclass(frozen=True)
class HistoricalBug:
    """A fix of an engine, verified in published releases.

    ``engine``: ``"sglang"`` or ``"vllm"``; ``buggy``: a published release holding the bug;
    ``fixed``: the first published release holding the fix; ``path``: the file inside the
    wheel (``sglang/srt/layers/attention/...``); ``function``: ``Class.method`` (or a
    module-level function) holding the buggy site; ``rule``: the rule code (``GR010``);
    ``source``: the PR or issue that fixed it (``sglang#12345``); ``summary``: one line,
    what was wrong.
    """

    engine: str
    buggy: str
    fixed: str
    path: str
    function: str
    rule: str
    source: str
    summary: str

    @property
    def key(self) -> str:
        """A short name for test ids and messages: ``GR010 sglang 0.5.10->0.5.12 Class.method``."""
        return f"{self.rule} {self.engine} {self.buggy}->{self.fixed} {self.function}"

    def problems(self) -> list[str]:
        """What is malformed about this entry (empty: nothing)."""
        from packaging.version import InvalidVersion, Version

        found: list[str] = []
        if self.engine not in ENGINES:
            found.append(f"engine={self.engine!r} is not one of {sorted(ENGINES)}")
        elif not self.path.startswith(ENGINES[self.engine] + "/") or not self.path.endswith(".py"):
            found.append(f"path={self.path!r} is not a .py file inside the {ENGINES[self.engine]!r} package")
        try:
            if Version(self.buggy) >= Version(self.fixed):
                found.append(f"buggy={self.buggy!r} is not older than fixed={self.fixed!r}")
        except InvalidVersion as exc:
            found.append(f"unparsable release: {exc}")
        if not self.function or any(not part.isidentifier() for part in self.function.split(".")):
            found.append(f"function={self.function!r} is not Class.method or a function name")
        for name in ("rule", "source", "summary"):
            if not getattr(self, name).strip():
                found.append(f"{name} is empty")
        return found


def ledger_modules() -> list[str]:
    """The family modules of this package (``tests.lint_history.mode``, ...), sorted."""
    here = Path(__file__).resolve().parent
    return sorted(
        f"{__package__}.{info.name}"
        for info in pkgutil.iter_modules([str(here)])
        if not info.ispkg and info.name not in NOT_LEDGERS
    )


def all_bugs() -> list[HistoricalBug]:
    """Every ``BUGS`` entry of every family module, in module order.

    Raises ``TypeError`` naming the module when a family module has no ``BUGS`` list or
    holds something other than :class:`HistoricalBug` in it (a typo must not drop a family
    from the measurement silently).
    """
    bugs: list[HistoricalBug] = []
    for name in ledger_modules():
        module = importlib.import_module(name)
        entries = getattr(module, "BUGS", None)
        if not isinstance(entries, list):
            raise TypeError(f"{name} is a ledger module but has no module-level list BUGS")
        for i, entry in enumerate(entries):
            if not isinstance(entry, HistoricalBug):
                raise TypeError(f"{name}.BUGS[{i}] is {type(entry).__name__}, not HistoricalBug")
            bugs.append(entry)
    return bugs
