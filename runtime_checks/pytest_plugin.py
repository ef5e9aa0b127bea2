"""pytest plugin: run an engine's own attention tests with the runtime guard on.

Registered through the ``pytest11`` entry point ``fmha_guard`` (``setup.cfg``), so it
loads in every pytest session of an environment where fmha-guardrails is installed;
it does nothing unless asked (``-p no:fmha_guard`` unloads it):

``pytest --fmha-guard=values [--fmha-guard-action=warn]``
    Installs the guard (:func:`runtime_checks.install`) for the whole session, before
    collection, so every FlashInfer launch the tests make is checked. Under ``raise``
    (the default) a violation raises :class:`guardrails.FmhaInvariantError` inside the
    test that made it, which fails that test with the error's message (entry point,
    call site, invariant). Under ``warn`` the launches go through; each violation is an
    :class:`guardrails.errors.FmhaInvariantWarning` (pytest lists it in its warnings
    summary; ``-W error::guardrails.errors.FmhaInvariantWarning`` fails the test) and
    the ``fmha-guard violations`` section of the terminal summary lists them per test.
    A bad level or action is a usage error (exit 4).

fixture ``fmha_guard``
    Installs the guard for one test and yields :data:`runtime_checks.state.STATE`
    (counters reset), restoring the previous state after (:func:`runtime_checks.guarded`).
    The level and action come from ``@pytest.mark.fmha_guard("values", action="warn")``,
    else from an indirect parameter (``@pytest.mark.parametrize("fmha_guard", ["shapes",
    ("values", "warn")], indirect=True)``), else ``shapes`` / ``raise``.

With pytest-xdist each worker installs its own guard; the summary section then lists
only what the controller process saw.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator, Optional

import pytest

if TYPE_CHECKING:
    from guardrails.errors import FmhaInvariantError
    from runtime_checks.state import GuardState

__all__ = ["SessionGuard"]

MARKER = "fmha_guard"
_SESSION_PLUGIN = "fmha_guard_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fmha-guard", "fmha-guardrails runtime guard")
    group.addoption(
        "--fmha-guard", dest="fmha_guard_level", metavar="LEVEL", default=None,
        help="check every FlashInfer launch of the session at LEVEL (shapes or values; off installs nothing)",
    )
    group.addoption(
        "--fmha-guard-action", dest="fmha_guard_action", metavar="ACTION", default=None,
        help="what a violation does with --fmha-guard: raise (default; fails the test) or warn",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(level='shapes', action='raise'): the guard level and action of the fmha_guard fixture"
    )
    level, action = config.getoption("fmha_guard_level"), config.getoption("fmha_guard_action")
    if level is None and action is None:
        return
    from guardrails.config import GuardConfigError, Level, parse_action, parse_level

    if level is None:
        raise pytest.UsageError("--fmha-guard-action needs --fmha-guard LEVEL (shapes or values)")
    try:
        parsed = parse_level(level, setting="--fmha-guard"), parse_action(action or "raise", setting="--fmha-guard-action")
    except GuardConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if parsed[0] is not Level.OFF:
        config.pluginmanager.register(SessionGuard(*parsed), _SESSION_PLUGIN)


class SessionGuard:
    """The guard of a ``--fmha-guard`` session: installed from session start (before
    collection) to session finish, every violation recorded with the test that made it."""

    def __init__(self, level: Any, action: Any) -> None:
        self.level, self.action = level, action
        self.current: Optional[str] = None
        self.violations: Counter[tuple[str, str]] = Counter()  # (test id, message) -> count

    def pytest_report_header(self) -> str:
        return f"fmha-guard: runtime guard on (level={self.level}, action={self.action})"

    def pytest_sessionstart(self) -> None:
        import runtime_checks
        from runtime_checks import launch_guard

        runtime_checks.install(self.level, self.action)
        launch_guard.VIOLATION_LISTENERS.append(self.record)

    def pytest_sessionfinish(self) -> None:
        import runtime_checks
        from runtime_checks import launch_guard

        if self.record in launch_guard.VIOLATION_LISTENERS:
            launch_guard.VIOLATION_LISTENERS.remove(self.record)
        runtime_checks.uninstall()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = item.nodeid
        yield
        self.current = None

    def record(self, error: "FmhaInvariantError") -> None:
        self.violations[(self.current or "(outside any test)", str(error))] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.violations:
            return
        what = "raised" if str(self.action) == "raise" else "let through"
        terminalreporter.section(f"fmha-guard violations ({what}, level={self.level})")
        for (test, message), count in self.violations.items():
            times = f" (x{count})" if count > 1 else ""
            terminalreporter.line(f"{test}{times}: {message}")


@pytest.fixture
def fmha_guard(request: pytest.FixtureRequest) -> Iterator["GuardState"]:
    """The runtime guard installed for this test; yields ``runtime_checks.state.STATE``."""
    from runtime_checks import guarded

    level, action = "shapes", "raise"
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        level = marker.kwargs.get("level", marker.args[0] if marker.args else level)
        action = marker.kwargs.get("action", marker.args[1] if len(marker.args) > 1 else action)
    elif hasattr(request, "param"):
        param = request.param
        level, action = (param, action) if isinstance(param, str) else tuple(param)
    with guarded(level, action) as state:
        state.reset_counters()
        yield state
