"""``fmha-guard run [--level L] [--action A] -- CMD ...``: run a program with the runtime guard on.

The way ``opentelemetry-instrument`` and ``ddtrace-run`` do it, so it works whether or
not ``pip install`` left ``fmha_guardrails.pth`` in site-packages:

* ``FMHA_GUARD`` / ``FMHA_GUARD_ACTION`` are set in the environment (``--level``
  default: the ``FMHA_GUARD`` already set, else ``shapes``; ``--action`` default:
  ``FMHA_GUARD_ACTION``, else ``raise``), so every process the command starts inherits
  the guard;
* :data:`runtime_checks.bootstrap.BOOTSTRAP_DIR` goes first on ``PYTHONPATH``: its
  ``sitecustomize`` arms the guard in every Python process that does not run with
  ``-S`` / ``-I`` (and then imports the ``sitecustomize`` it shadows);
* the command replaces this process (``os.execvpe``; a child process on Windows), so
  its exit status is the command's: 127 when it is not found, 126 when it cannot be run.

An unknown ``--level`` / ``--action`` is a usage error (exit 2); an unknown value already
in the environment fails closed as everywhere (:meth:`guardrails.config.GuardConfig.from_env`),
is warned about once here and replaced by what it fell back to, so the children do
not each warn again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from guardrails.config import ACTION_ENV_VAR, LEVEL_ENV_VAR, GuardConfig, Level, parse_action, parse_level

from .exit_status import UsageError

__all__ = ["add_run_parser", "run_run", "guarded_environment", "EXIT_NOT_FOUND", "EXIT_NOT_EXECUTABLE"]

EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126
"""The shell's statuses for a command that is not found / cannot be executed."""


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    """The ``run`` subcommand's arguments."""
    run = sub.add_parser(
        "run",
        help="run a command with the runtime guard on (no .pth needed)",
        description="Run CMD with FMHA_GUARD set and a sitecustomize on PYTHONPATH that arms the guard "
        "in every Python process of CMD, children included. Exit status: CMD's.",
    )
    run.add_argument("--level", help="off, shapes or values (default: FMHA_GUARD if set, else shapes)")
    run.add_argument("--action", help="raise or warn (default: FMHA_GUARD_ACTION if set, else raise)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")


def guarded_environment(
    level: str | None, action: str | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) with the guard's settings and the bootstrap
    directory first on ``PYTHONPATH``.

    Raises:
        GuardConfigError: ``level`` or ``action`` is not a guard level / action.
    """
    from runtime_checks.bootstrap import BOOTSTRAP_DIR

    env = dict(os.environ if environ is None else environ)
    chosen_level = parse_level(level, setting="--level") if level is not None else None
    chosen_action = parse_action(action, setting="--action") if action is not None else None
    inherited = {  # what the command line leaves to the environment (unset or empty: the defaults)
        name: env[name]
        for name, chosen in ((LEVEL_ENV_VAR, chosen_level), (ACTION_ENV_VAR, chosen_action))
        if chosen is None and env.get(name, "").strip()
    }
    read = GuardConfig.from_env(inherited, default_level=Level.SHAPES)  # warns about a value that fell back
    env[LEVEL_ENV_VAR] = str(chosen_level if chosen_level is not None else read.level)
    env[ACTION_ENV_VAR] = str(chosen_action if chosen_action is not None else read.action)
    path = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry and entry != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *path])
    return env


def run_run(args: argparse.Namespace) -> int:
    """Exec the command under the guard; returns only if it could not be started (or on Windows)."""
    command: Sequence[str] = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise UsageError("run: no command given (fmha-guard run [--level L] [--action A] -- CMD ...)")
    env = guarded_environment(args.level, args.action)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # no exec that keeps the console and the exit status there
            return subprocess.call(list(command), env=env)
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        print(f"fmha-guard run: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as exc:
        print(f"fmha-guard run: {command[0]}: cannot run it ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    raise AssertionError("unreachable: os.execvpe returned")  # pragma: no cover
