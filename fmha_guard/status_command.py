"""``fmha-guard status [--format text|json]``: would this interpreter activate the runtime guard?

It reports, for the interpreter that runs it (run it with the engine's Python):

* ``FMHA_GUARD`` / ``FMHA_GUARD_ACTION``: the value, what it parses to, and the
  fallback when it does not parse (:meth:`guardrails.config.GuardConfig.from_env`,
  without warning);
* the startup files (``fmha_guardrails.pth``, and PEP 829's ``fmha_guardrails.start``
  on Python >= 3.15) in each site directory ``site`` reads, whether they match this
  package's, and whether this very process was armed by them (the command is itself a
  Python process of the environment); ``fmha-guard run -- CMD`` is the alternative
  where they are missing;
* the kernel libraries and entry points the guard would patch
  (:data:`runtime_checks.kernel_specs.ENTRY_POINTS`) and which are installed, found
  without importing them (their specs, not their modules).

``--format json`` prints the same as one object (:func:`guard_status`). Exit status 0.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import site
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Optional

from guardrails.config import ACTION_ENV_VAR, LEVEL_ENV_VAR, GuardConfig, Level

from .exit_status import EXIT_CLEAN

__all__ = ["add_status_parser", "run_status", "guard_status"]

_PTH, _START = "fmha_guardrails.pth", "fmha_guardrails.start"


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    """The ``status`` subcommand's arguments."""
    status = sub.add_parser("status", help="say whether this interpreter activates the runtime guard, and what it patches")
    status.add_argument("--format", choices=("text", "json"), default="text")


def run_status(args: argparse.Namespace) -> int:
    report = guard_status()
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return EXIT_CLEAN


# ---------------------------------------------------------------- gathering


def guard_status(environ: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Everything ``fmha-guard status`` reports, as JSON-ready values.

    Keys: ``python``, ``python_version``, ``settings`` (one entry per variable: ``value``
    or ``None``, ``parsed``, ``fallback`` message or ``None``), ``level``, ``action``,
    ``startup`` (``uses``: the file this Python runs, ``site_enabled``, ``files``: one
    entry per site directory and file with ``present`` and ``current``),
    ``run_bootstrap`` (this process was started by ``fmha-guard run``),
    ``armed_in_this_process``, ``would_activate``, ``reason``, ``alternative``,
    ``libraries`` and ``entry_points``.
    """
    from runtime_checks import armed, startup
    from runtime_checks.bootstrap import BOOTSTRAP_DIR

    env = os.environ if environ is None else environ
    config = GuardConfig.from_env(env, warn=False)
    uses = _START if startup.START_FILES_SUPPORTED else _PTH
    files = _startup_files()
    has_startup = not sys.flags.no_site and any(f["present"] for f in files if f["name"] == uses)
    run_bootstrap = (  # started by fmha-guard run: its sitecustomize arms this process and its children
        BOOTSTRAP_DIR in env.get("PYTHONPATH", "").split(os.pathsep)
        and not sys.flags.no_site and not sys.flags.ignore_environment
    )
    activates = config.level is not Level.OFF and (has_startup or run_bootstrap)
    report: dict[str, Any] = {
        "python": sys.executable,
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "settings": {
            LEVEL_ENV_VAR: _setting(env, LEVEL_ENV_VAR, str(config.level), config.fallbacks),
            ACTION_ENV_VAR: _setting(env, ACTION_ENV_VAR, str(config.action), config.fallbacks),
        },
        "level": str(config.level),
        "action": str(config.action),
        "startup": {"uses": uses, "site_enabled": not sys.flags.no_site, "files": files},
        "run_bootstrap": run_bootstrap,
        "armed_in_this_process": armed.pending() is not None or _installed(),
        "would_activate": activates,
        "reason": _reason(config, env, uses, has_startup, run_bootstrap),
        "alternative": None if has_startup else "fmha-guard run [--level L] [--action A] -- CMD ...",
    }
    report.update(_kernel_libraries())
    return report


def _setting(env, name: str, parsed: str, fallbacks: tuple[str, ...]) -> dict[str, Any]:
    value = env.get(name)
    fallback = next((note for note in fallbacks if note.startswith(f"{name}=")), None)
    return {"value": value, "parsed": parsed, "fallback": fallback}


def _reason(config: GuardConfig, env, uses: str, has_startup: bool, run_bootstrap: bool) -> str:
    if config.level is Level.OFF:
        how = "unset" if LEVEL_ENV_VAR not in env else f"{env[LEVEL_ENV_VAR]!r}"
        return f"{LEVEL_ENV_VAR} is {how}, which means off: nothing is patched"
    if run_bootstrap:
        return f"started by fmha-guard run: its sitecustomize arms the guard at {config.level}"
    if has_startup:
        return f"{uses} in site-packages arms the guard at {config.level}; it is installed at the first kernel-library import"
    if sys.flags.no_site:
        return "python -S: site does not run, so no startup file does; call runtime_checks.install() or drop -S"
    return (
        f"no {uses} in any site directory of this interpreter (pip install . should have put it there): "
        "reinstall, or start the program with fmha-guard run -- CMD"
    )


def _startup_files() -> list[dict[str, Any]]:
    """One entry per (site directory, startup file): present, and whether it matches this package's copy."""
    directories = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    seen, out = set(), []
    for directory in directories:
        resolved = os.path.realpath(directory)
        if resolved in seen:  # a venv's lib64 -> lib symlink
            continue
        seen.add(resolved)
        for name in (_PTH, _START):
            path = Path(directory) / name
            present = path.is_file()
            out.append({"directory": directory, "name": name, "present": present,
                        "current": _matches_package_copy(path) if present else None})
    return out


def _matches_package_copy(path: Path) -> Optional[bool]:
    """Whether an installed startup file equals the package's source copy (``None``: no copy here to compare)."""
    import runtime_checks

    source = Path(runtime_checks.__file__).parent / path.name
    try:
        return path.read_bytes() == source.read_bytes()
    except OSError:
        return None


def _installed() -> bool:
    activation = sys.modules.get("runtime_checks.activation")
    return activation is not None and activation.import_hook_finder() is not None


def _kernel_libraries() -> dict[str, Any]:
    """``libraries`` (name, installed, version, location) of
    :data:`runtime_checks.armed.ROOT_PACKAGES` and ``entry_points`` (name, library,
    module, found) of :data:`~runtime_checks.kernel_specs.ENTRY_POINTS`."""
    from runtime_checks.armed import ROOT_PACKAGES
    from runtime_checks.kernel_specs import ENTRY_POINTS

    specs = {root: _find_module(root) for root in ROOT_PACKAGES}
    libraries = [
        {
            "name": root,
            "installed": spec is not None,
            "version": _version(root.partition(".")[0]) if spec is not None else None,
            "location": (list(spec.submodule_search_locations or []) or [spec.origin])[0] if spec is not None else None,
        }
        for root, spec in specs.items()
    ]
    entry_points = []
    for entry in ENTRY_POINTS:
        library = next(root for root in ROOT_PACKAGES if entry.module == root or entry.module.startswith(root + "."))
        entry_points.append({
            "name": f"{entry.module}.{entry.qualname}", "library": library, "module": entry.module,
            "found": specs[library] is not None and _find_module(entry.module) is not None,
        })
    return {"libraries": libraries, "entry_points": entry_points}


def _find_spec(name: str, path: Optional[list[str]]) -> Any:
    """``importlib.util.find_spec`` without importing anything and without firing the
    armed guard or the guard's import hook (they are skipped on ``sys.meta_path``)."""
    from runtime_checks.armed import ArmedGuard
    from runtime_checks.import_hook import PostImportFinder

    if path is None and name in sys.modules:
        return importlib.util.find_spec(name)
    for finder in sys.meta_path:
        if isinstance(finder, (ArmedGuard, PostImportFinder)) or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, path)
        if spec is not None:
            return spec
    return None


def _find_module(name: str) -> Any:
    """The spec of module ``a.b.c``, its packages located one by one, none imported."""
    parts = name.split(".")
    spec = _find_spec(parts[0], None)
    for depth in range(1, len(parts)):
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            return None
        spec = _find_spec(".".join(parts[: depth + 1]), locations)
    return spec


def _version(import_name: str) -> Optional[str]:
    """The version of the distribution that provides top-level package ``import_name``."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in _distributions().get(import_name, []):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


# ---------------------------------------------------------------- text


def _print_text(report: dict[str, Any]) -> None:
    from rich.markup import escape

    from .console import console, print_table

    out = console()
    out.print(f"fmha-guard status: Python {report['python_version']} ({escape(report['python'])})")
    for name, setting in report["settings"].items():
        value = "unset" if setting["value"] is None else repr(setting["value"])
        line = f"  {name} = {value} -> {setting['parsed']}"
        if setting["fallback"]:
            line += f" (fails closed: {setting['fallback']})"
        out.print(escape(line))
    verdict = "activates" if report["would_activate"] else "does not activate"
    out.print(escape(f"  this interpreter {verdict} the guard: {report['reason']}"))
    if report["armed_in_this_process"]:
        out.print("  armed in this process (fmha-guard status itself started with it)")
    for entry in report["startup"]["files"]:
        state = "present" if entry["present"] else "missing"
        if entry["present"] and entry["current"] is False:
            state += ", differs from this package's copy: reinstall"
        used = " (used by this Python)" if entry["name"] == report["startup"]["uses"] else ""
        out.print(escape(f"  {entry['directory']}/{entry['name']}: {state}{used}"))
    if report["alternative"]:
        out.print(escape(f"  without it: {report['alternative']}"))
    print_table(
        out, "Kernel libraries the guard patches", ("library", "installed", "version", "location"),
        [(lib["name"], "yes" if lib["installed"] else "no", lib["version"] or "", lib["location"] or "")
         for lib in report["libraries"]],
    )
    print_table(
        out, "Entry points", ("entry point", "module found"),
        [(e["name"], "yes" if e["found"] else "no") for e in report["entry_points"]],
    )
