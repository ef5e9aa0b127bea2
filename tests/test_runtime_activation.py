"""Activation of the runtime guard: install/uninstall/guarded, the import hook, startup files.

Most tests run a script in a fresh interpreter against a FAKE ``flashinfer`` package
written into ``tmp_path`` (the 0.7.x layout: ``decode.py``, ``prefill.py``,
``mla/__init__.py`` re-exporting ``mla/_core.py``, wrapper classes with
``partialmethod`` aliases, a lazy top-level ``__getattr__``), so patching is
asserted object by object and nothing leaks into the pytest process. The fake
records every original object in ``flashinfer._record.ORIGINALS`` under
``"module:qualname"``. Two tests use the real installed flashinfer-python.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pkgutil
import shutil
import site
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PTH = REPO / "runtime_checks" / "fmha_guardrails.pth"
START = REPO / "runtime_checks" / "fmha_guardrails.start"

# ----------------------------------------------------------------- the fake flashinfer

_FAKE_INIT = '''
"""Fake flashinfer: the 0.7.x module layout, no kernels."""
import importlib as _importlib

from .decode import BatchDecodeWithPagedKVCacheWrapper as BatchDecodeWithPagedKVCacheWrapper
from .prefill import BatchPrefillWithPagedKVCacheWrapper as BatchPrefillWithPagedKVCacheWrapper
from .prefill import trtllm_ragged_attention_deepseek as trtllm_ragged_attention_deepseek

_LAZY = {"trtllm_batch_decode_with_kv_cache": ".decode", "trtllm_batch_context_with_kv_cache": ".prefill"}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
'''

_FAKE_WRAPPER = '''
class {cls}:
    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size, **kwargs):
        self.planned = True

    def run(self, q, paged_kv_cache, *, return_lse=False, **kwargs):
        return ("{mod}.run", q, return_lse)
{alias}
ORIGINALS["flashinfer.{mod}:{cls}.plan"] = {cls}.__dict__["plan"]
ORIGINALS["flashinfer.{mod}:{cls}.run"] = {cls}.__dict__["run"]
'''
_FAKE_ALIAS = '''
    run_return_lse = functools.partialmethod(run, return_lse=True)

ORIGINALS["flashinfer.{mod}:{cls}.run_return_lse"] = {cls}.__dict__["run_return_lse"]
'''

_FAKE_DECODE = '''
import functools

from ._record import ORIGINALS
from .mla import trtllm_batch_decode_with_kv_cache_mla as trtllm_batch_decode_with_kv_cache_mla


def trtllm_batch_decode_with_kv_cache(query, kv_cache, workspace_buffer, block_tables, seq_lens, max_seq_len, **kwargs):
    return ("decode", query)


ORIGINALS["flashinfer.decode:trtllm_batch_decode_with_kv_cache"] = trtllm_batch_decode_with_kv_cache
'''

_FAKE_PREFILL = '''
import functools

from ._record import ORIGINALS


def trtllm_batch_context_with_kv_cache(query, kv_cache, workspace_buffer, block_tables, seq_lens, max_q_len, max_kv_len, bmm1_scale, bmm2_scale, batch_size, cum_seq_lens_q, cum_seq_lens_kv, **kwargs):
    return ("context", query)


ORIGINALS["flashinfer.prefill:trtllm_batch_context_with_kv_cache"] = trtllm_batch_context_with_kv_cache
'''

_FAKE_RAGGED = '''

def trtllm_ragged_attention_deepseek(query, key, value, workspace_buffer, seq_lens, max_q_len, max_kv_len, bmm1_scale, bmm2_scale, o_sf_scale, batch_size, window_left, cum_seq_lens_q, cum_seq_lens_kv, **kwargs):
    return ("ragged", query)


ORIGINALS["flashinfer.prefill:trtllm_ragged_attention_deepseek"] = trtllm_ragged_attention_deepseek
'''

_FAKE_MLA_CORE = '''
from .{up}_record import ORIGINALS

__all__ = ["trtllm_batch_decode_with_kv_cache_mla"]


def trtllm_batch_decode_with_kv_cache_mla(query, kv_cache, workspace_buffer, qk_nope_head_dim, kv_lora_rank, qk_rope_head_dim, block_tables, seq_lens, max_seq_len, **kwargs):
    return ("mla", query)


ORIGINALS["flashinfer.mla:trtllm_batch_decode_with_kv_cache_mla"] = trtllm_batch_decode_with_kv_cache_mla
'''

_FAKE_ENGINE = '''
"""An engine backend that imported the kernels by name (vLLM's style)."""
from flashinfer.decode import trtllm_batch_decode_with_kv_cache
from flashinfer.mla import trtllm_batch_decode_with_kv_cache_mla
'''

# Helpers the scripts import (after the fake flashinfer is on sys.path).
_FAKE_CHECKS = '''
import functools, sys
from runtime_checks.kernel_specs import ENTRY_POINTS


def originals():
    from flashinfer._record import ORIGINALS
    return ORIGINALS


def _owner_and_value(entry):
    module = sys.modules[entry.module]
    if entry.is_method:
        cls_name, name = entry.qualname.split(".")
        cls = vars(module)[cls_name]
        return cls, vars(cls).get(name)
    return module, vars(module).get(entry.qualname)


def _alias_key(entry, alias):
    return f"{entry.module}:{entry.qualname.split('.')[0]}.{alias}"


def check_guarded():
    """Every entry point the fake has is its guard over the recorded original; aliases too."""
    done = 0
    for entry in ENTRY_POINTS:
        key = f"{entry.module}:{entry.qualname}"
        if key not in originals():
            continue
        owner, value = _owner_and_value(entry)
        assert getattr(value, "__fmha_guard__", None) == entry, (key, value)
        assert value.__wrapped__ is originals()[key], key
        assert not hasattr(value.__wrapped__, "__fmha_guard__"), f"{key} wrapped twice"
        for alias in entry.aliases:
            if _alias_key(entry, alias) in originals():
                new, old = vars(owner)[alias], originals()[_alias_key(entry, alias)]
                assert isinstance(new, functools.partialmethod) and new is not old, alias
                assert new.func is value and new.args == old.args and new.keywords == old.keywords, alias
        done += 1
    return done


def check_original():
    """Every entry point and alias is the very original object; no guard left in flashinfer*."""
    for entry in ENTRY_POINTS:
        key = f"{entry.module}:{entry.qualname}"
        if key not in originals():
            continue
        owner, value = _owner_and_value(entry)
        assert value is originals()[key], (key, value)
        for alias in entry.aliases:
            if _alias_key(entry, alias) in originals():
                assert vars(owner)[alias] is originals()[_alias_key(entry, alias)], alias
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] == "flashinfer":
            for key, value in vars(module).items():
                assert not hasattr(value, "__fmha_guard__"), f"{name}.{key} still guarded"


def check_mla_reexports(guarded):
    import flashinfer.decode, flashinfer.mla
    objs = [flashinfer.mla.trtllm_batch_decode_with_kv_cache_mla, flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla]
    if "flashinfer.mla._core" in sys.modules:
        objs.append(sys.modules["flashinfer.mla._core"].trtllm_batch_decode_with_kv_cache_mla)
    assert all(o is objs[0] for o in objs), objs
    assert hasattr(objs[0], "__fmha_guard__") is guarded


def finder_registered():
    from runtime_checks.import_hook import PostImportFinder
    return any(isinstance(f, PostImportFinder) for f in sys.meta_path)
'''


def write_fake_flashinfer(root: Path, *, legacy: bool = False) -> Path:
    """Write the fake package (and helper modules) under ``root``; returns ``root``.

    ``legacy``: a 0.6-like layout (``mla.py`` a plain module) that also lacks
    ``trtllm_ragged_attention_deepseek`` and the decode wrapper's ``run_return_lse``.
    """
    pkg = root / "flashinfer"
    pkg.mkdir(parents=True)
    init = _FAKE_INIT
    if legacy:
        init = init.replace(
            "from .prefill import trtllm_ragged_attention_deepseek as trtllm_ragged_attention_deepseek\n", ""
        )
    (pkg / "__init__.py").write_text(init)
    (pkg / "_record.py").write_text("ORIGINALS = {}\n")
    decode = _FAKE_DECODE + _FAKE_WRAPPER.format(
        cls="BatchDecodeWithPagedKVCacheWrapper", mod="decode",
        alias="" if legacy else _FAKE_ALIAS.format(cls="BatchDecodeWithPagedKVCacheWrapper", mod="decode"),
    )
    decode += "\n\nclass CUDAGraphBatchDecodeWithPagedKVCacheWrapper(BatchDecodeWithPagedKVCacheWrapper):\n    pass\n"
    (pkg / "decode.py").write_text(decode)
    prefill = _FAKE_PREFILL + ("" if legacy else _FAKE_RAGGED) + _FAKE_WRAPPER.format(
        cls="BatchPrefillWithPagedKVCacheWrapper", mod="prefill",
        alias=_FAKE_ALIAS.format(cls="BatchPrefillWithPagedKVCacheWrapper", mod="prefill"),
    )
    (pkg / "prefill.py").write_text(prefill)
    if legacy:
        (pkg / "mla.py").write_text(_FAKE_MLA_CORE.format(up=""))
    else:
        (pkg / "mla").mkdir()
        (pkg / "mla" / "_core.py").write_text(_FAKE_MLA_CORE.format(up="."))
        (pkg / "mla" / "__init__.py").write_text(
            "from ._core import *  # noqa: F403\n\n\ndef __getattr__(name):\n    raise AttributeError(name)\n"
        )
    (root / "engine_backend.py").write_text(_FAKE_ENGINE)
    (root / "fake_checks.py").write_text(_FAKE_CHECKS)
    return root


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMHA_GUARD") and k != "PYTHONUSERBASE"}
    env["FLASHINFER_NO_DOWNLOAD"] = "1"
    env.update(extra)
    return env


def run_script(
    tmp_path: Path, code: str, *, fake: Path | None, env: dict[str, str] | None = None, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (fake flashinfer, then the repo, first on the path); must exit 0."""
    script = tmp_path / f"script_{len(list(tmp_path.glob('script_*.py')))}.py"
    script.write_text(textwrap.dedent(code))
    env = clean_env() if env is None else env
    env["PYTHONPATH"] = os.pathsep.join([*([str(fake)] if fake else []), str(REPO)])
    proc = subprocess.run(
        [sys.executable, *flags, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"script failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return write_fake_flashinfer(tmp_path / "fake")


# ----------------------------------------------------------------- zero cost when off

@pytest.mark.parametrize("value", [None, "off"])
def test_off_imports_and_patches_nothing(tmp_path, fake, value):
    env = clean_env() if value is None else clean_env(FMHA_GUARD=value)
    run_script(tmp_path, """
        import sys
        meta_path = list(sys.meta_path)
        import runtime_checks, runtime_checks.startup
        runtime_checks.startup.activate()
        runtime_checks.startup.activate_from_pth()
        assert sys.meta_path == meta_path, sys.meta_path
        # startup reads FMHA_GUARD through guardrails.config (standard library only): nothing else
        heavy = sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "flashinfer", "guardrails", "pydantic")
                       and m not in ("guardrails", "guardrails.config"))
        assert heavy == [], heavy
        import flashinfer.decode
        assert not hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__")
        assert not runtime_checks.is_installed()
        import fake_checks
        fake_checks.check_original()
    """, fake=fake, env=env)


# ----------------------------------------------------------------- install / uninstall

def test_install_before_import_sglang_and_vllm_styles(tmp_path, fake):
    run_script(tmp_path, """
        import functools, sys
        import runtime_checks
        from runtime_checks.state import STATE
        runtime_checks.install("shapes")
        runtime_checks.install("values", "warn")  # idempotent: only reconfigures
        assert runtime_checks.is_installed() and STATE.level == 2 and STATE.action == "warn"
        assert "flashinfer" not in sys.modules

        import flashinfer                                  # SGLang: flashinfer.decode.X(...)
        import fake_checks
        assert fake_checks.check_guarded() == 8
        fake_checks.check_mla_reexports(guarded=True)
        from flashinfer.decode import trtllm_batch_decode_with_kv_cache   # vLLM: from-import afterwards
        from flashinfer import BatchDecodeWithPagedKVCacheWrapper
        from flashinfer.mla import trtllm_batch_decode_with_kv_cache_mla
        assert trtllm_batch_decode_with_kv_cache is flashinfer.decode.trtllm_batch_decode_with_kv_cache
        assert trtllm_batch_decode_with_kv_cache.__fmha_guard__.qualname == "trtllm_batch_decode_with_kv_cache"
        assert hasattr(trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
        assert hasattr(BatchDecodeWithPagedKVCacheWrapper.run, "__fmha_guard__")
        # top level: eager re-export and lazy __getattr__ both reach the guard
        assert flashinfer.trtllm_ragged_attention_deepseek is flashinfer.prefill.trtllm_ragged_attention_deepseek
        assert flashinfer.trtllm_batch_decode_with_kv_cache is trtllm_batch_decode_with_kv_cache
        assert hasattr(flashinfer.trtllm_batch_context_with_kv_cache, "__fmha_guard__")
        # subclasses inherit the guarded method; the hook left no trace on the modules
        assert flashinfer.decode.CUDAGraphBatchDecodeWithPagedKVCacheWrapper.run is BatchDecodeWithPagedKVCacheWrapper.run
        for name in ("flashinfer", "flashinfer.decode", "flashinfer.prefill", "flashinfer.mla"):
            module = sys.modules[name]
            assert type(module.__loader__).__name__ == "SourceFileLoader", module.__loader__
            assert module.__spec__.loader is module.__loader__

        runtime_checks.install("off")  # guards pass straight through; calls and aliases behave
        wrapper = BatchDecodeWithPagedKVCacheWrapper()
        assert wrapper.run_return_lse("q", "kv") == ("decode.run", "q", True)
        assert wrapper.run("q", "kv") == ("decode.run", "q", False)
        assert flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper().run_return_lse("q", "kv") == ("prefill.run", "q", True)
        assert trtllm_batch_decode_with_kv_cache("q", "kv", "ws", "bt", "sl", 8) == ("decode", "q")
        before = flashinfer.decode.trtllm_batch_decode_with_kv_cache
        runtime_checks.install("shapes")
        assert flashinfer.decode.trtllm_batch_decode_with_kv_cache is before  # no double wrapping
        assert fake_checks.check_guarded() == 8

        runtime_checks.uninstall()
        assert not runtime_checks.is_installed() and STATE.level == 0 and not fake_checks.finder_registered()
        fake_checks.check_original()
        fake_checks.check_mla_reexports(guarded=False)
        assert flashinfer.trtllm_batch_decode_with_kv_cache is fake_checks.originals()[
            "flashinfer.decode:trtllm_batch_decode_with_kv_cache"]
        this = sys.modules["__main__"]  # same-name from-imports taken while installed are restored
        assert this.trtllm_batch_decode_with_kv_cache is flashinfer.decode.trtllm_batch_decode_with_kv_cache
        assert this.trtllm_batch_decode_with_kv_cache_mla is flashinfer.mla.trtllm_batch_decode_with_kv_cache_mla
        runtime_checks.uninstall()  # twice is fine

        runtime_checks.install("shapes")  # and again, on the already imported modules
        assert fake_checks.check_guarded() == 8
        runtime_checks.uninstall()
        fake_checks.check_original()
    """, fake=fake)


def test_install_after_import_rebinds_engine_references(tmp_path, fake):
    run_script(tmp_path, """
        import sys
        import flashinfer, engine_backend, fake_checks
        import runtime_checks
        fake_checks.check_original()
        runtime_checks.install("shapes")
        assert fake_checks.check_guarded() == 8
        fake_checks.check_mla_reexports(guarded=True)
        # the engine imported the kernels before install(): its names are rebound
        assert engine_backend.trtllm_batch_decode_with_kv_cache is flashinfer.decode.trtllm_batch_decode_with_kv_cache
        assert hasattr(engine_backend.trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
        assert fake_checks.finder_registered()
        runtime_checks.uninstall()
        fake_checks.check_original()
        assert engine_backend.trtllm_batch_decode_with_kv_cache is fake_checks.originals()[
            "flashinfer.decode:trtllm_batch_decode_with_kv_cache"]
        assert not hasattr(engine_backend.trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
    """, fake=fake)


def test_guarded_context_manager_nests_and_restores(tmp_path, fake):
    run_script(tmp_path, """
        import runtime_checks
        from runtime_checks import guarded, install, is_installed, uninstall
        from runtime_checks.state import STATE
        import flashinfer, fake_checks

        with guarded() as state:
            assert state is STATE and is_installed() and (STATE.level, STATE.action) == (1, "raise")
            fake_checks.check_guarded()
            guard = flashinfer.decode.trtllm_batch_decode_with_kv_cache
            with guarded("values", "warn"):
                assert (STATE.level, STATE.action) == (2, "warn")
                assert flashinfer.decode.trtllm_batch_decode_with_kv_cache is guard
            assert (STATE.level, STATE.action) == (1, "raise") and is_installed()
        assert not is_installed() and STATE.level == 0
        fake_checks.check_original()

        @guarded("values")
        def checked():
            return STATE.level, is_installed()
        assert checked() == (2, True) and not is_installed()

        try:
            with guarded("shapes"):
                raise KeyError("boom")
        except KeyError:
            pass
        assert not is_installed()
        fake_checks.check_original()

        install("values", "warn")  # installed before: the block only changes the level
        with guarded("shapes"):
            assert (STATE.level, STATE.action) == (1, "raise")
        assert is_installed() and (STATE.level, STATE.action) == (2, "warn")
        fake_checks.check_guarded()
        uninstall()
        fake_checks.check_original()
    """, fake=fake)


def test_legacy_layout_skips_missing_entry_points_once(tmp_path):
    fake = write_fake_flashinfer(tmp_path / "fake", legacy=True)
    proc = run_script(tmp_path, """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
        import runtime_checks
        runtime_checks.install("shapes")
        import flashinfer, fake_checks
        assert fake_checks.check_guarded() == 7  # no trtllm_ragged_attention_deepseek here
        fake_checks.check_mla_reexports(guarded=True)  # mla.py is a plain module in 0.6
        W = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper
        assert "run_return_lse" not in vars(W) and hasattr(W.run, "__fmha_guard__")
        runtime_checks.install("values")
        runtime_checks.uninstall()
        runtime_checks.install("shapes")
        runtime_checks.uninstall()
        fake_checks.check_original()
    """, fake=fake)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOG")]
    missing = [line for line in lines if "trtllm_ragged_attention_deepseek" in line]
    assert len(missing) == 1 and missing[0].startswith("LOG DEBUG"), lines
    assert not [line for line in lines if "WARNING" in line and "fmha-guard" in line], lines


def test_bad_level_or_action_raises_and_patches_nothing():
    from runtime_checks import activation

    assert not activation.is_installed()
    for level, action in (("loud", "raise"), ("shapes", "loud"), (7, "warn")):
        with pytest.raises(ValueError):
            activation.install(level, action)
        assert not activation.is_installed()


def test_action_from_env():
    from guardrails.config import ACTION_ENV_VAR, GuardConfig

    assert GuardConfig.from_env({}).action == "raise"
    assert GuardConfig.from_env({ACTION_ENV_VAR: ""}).action == "raise"
    assert GuardConfig.from_env({ACTION_ENV_VAR: " Warn "}).action == "warn"
    # an unknown action fails closed (it used to raise GuardConfigError): raise, and say so
    read = GuardConfig.from_env({ACTION_ENV_VAR: "loud"}, warn=False)
    assert read.action == "raise" and "FMHA_GUARD_ACTION='loud'" in read.fallbacks[0]


def test_install_accepts_the_spellings_the_environment_accepts(tmp_path, fake):
    """install(action="WARN") works as FMHA_GUARD_ACTION=WARN does (one parser: guardrails.config)."""
    run_script(tmp_path, """
        import runtime_checks
        from guardrails.config import Action, Level
        from runtime_checks.state import STATE
        runtime_checks.install(" Values", action="WARN")
        assert (STATE.level, STATE.action) == (Level.VALUES, Action.WARN)
        runtime_checks.install(1, " Raise ")
        assert (STATE.level, STATE.action) == (Level.SHAPES, Action.RAISE)
        with runtime_checks.guarded("VALUES", "Warn") as state:
            assert (state.level, state.action) == (Level.VALUES, Action.WARN)
        runtime_checks.uninstall()
    """, fake=fake)
    proc = run_script(tmp_path, """
        import runtime_checks
        from runtime_checks.state import STATE
        runtime_checks.install()
        print("RESULT", STATE.level, STATE.action)
        runtime_checks.uninstall()
    """, fake=fake, env=clean_env(FMHA_GUARD="Shapes", FMHA_GUARD_ACTION="WARN"))
    assert "RESULT shapes warn" in proc.stdout


# ----------------------------------------------------------------- startup files

def test_startup_files():
    from runtime_checks import startup

    assert PTH.stem == START.stem  # PEP 829 pairs <name>.start with <name>.pth
    if importlib.util.find_spec("setuptools") is not None:  # the build step imports it
        from runtime_checks import startup_files

        assert set(startup_files.STARTUP_FILES) == {PTH.name, START.name}
    pth_lines = [line for line in PTH.read_text(encoding="ascii").splitlines() if line and not line.startswith("#")]
    assert len(pth_lines) == 1 and pth_lines[0].startswith("import ")
    start_lines = [line for line in START.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert start_lines == ["runtime_checks.startup:activate"]
    assert pkgutil.resolve_name(start_lines[0]) is startup.activate


def test_startup_reads_the_config_module_tables(monkeypatch):
    """The startup path keeps no spellings of its own: it arms with what guardrails.config parses."""
    from guardrails import config
    from runtime_checks import armed, startup

    monkeypatch.setitem(config.LEVEL_NAMES, "loud", config.Level.VALUES)
    monkeypatch.setitem(config.ACTION_NAMES, "quiet", config.Action.WARN)
    monkeypatch.setenv("FMHA_GUARD", "loud")
    monkeypatch.setenv("FMHA_GUARD_ACTION", "quiet")
    monkeypatch.setattr(startup, "_activated", False)
    assert armed.pending() is None
    try:
        startup.activate()
        guard = armed.pending()
        assert guard is not None and sys.meta_path[0] is guard
        assert guard.config == config.GuardConfig(config.Level.VALUES, config.Action.WARN)
    finally:
        armed.disarm()
    assert armed.pending() is None and all(finder is not guard for finder in sys.meta_path)


def test_pth_line_is_a_no_op_where_start_files_run(monkeypatch):
    from runtime_checks import startup

    calls = []
    monkeypatch.setattr(startup, "activate", lambda: calls.append(1))
    monkeypatch.setattr(startup, "START_FILES_SUPPORTED", True)
    startup.activate_from_pth()
    assert calls == []
    monkeypatch.setattr(startup, "START_FILES_SUPPORTED", False)
    startup.activate_from_pth()
    assert calls == [1]


@pytest.mark.parametrize("value", [None, "shapes", "on", "loud"])
def test_pth_line_arms_before_site_packages_are_on_the_path(tmp_path, fake, value):
    """``site`` runs the .pth line before later site dirs are added: run it under -S, then add them.

    An unknown value fails closed (armed at shapes) and is warned about when FlashInfer is
    imported, not at interpreter start."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(PTH, site_dir)
    env = clean_env() if value is None else clean_env(FMHA_GUARD=value)
    proc = run_script(tmp_path, f"""
        import site, sys
        site.addsitedir({str(site_dir)!r})
        armed = type(sys.meta_path[0]).__name__ == "ArmedGuard"
        imported = sorted(m for m in ("runtime_checks.startup", "guardrails.models", "pydantic", "torch") if m in sys.modules)
        site.main()  # now the real site-packages (pydantic, ...)
        print("IMPORTING FLASHINFER", file=sys.stderr, flush=True)
        import flashinfer.decode
        from runtime_checks.state import STATE
        guarded = hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__")
        print("RESULT", armed, imported, guarded, STATE.level)
    """, fake=fake, env=env, flags=("-S",))
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    at_start, _, at_import = proc.stderr.partition("IMPORTING FLASHINFER\n")
    assert at_start == "", proc.stderr  # nothing at interpreter start, whatever the value
    if value is None:
        assert result == ["RESULT False [] False off"] and at_import == ""
    elif value in ("shapes", "on"):
        assert result == ["RESULT True ['runtime_checks.startup'] True shapes"] and at_import == "", proc.stderr
    else:
        assert result == ["RESULT True ['runtime_checks.startup'] True shapes"]
        lines = [line for line in at_import.splitlines() if "FmhaGuardConfigWarning" in line]
        assert len(lines) == 1 and "FMHA_GUARD='loud' is not a guard level" in lines[0], at_import
        assert "fails closed and checks at shapes" in lines[0]
        assert lines[0].startswith(str(tmp_path / "script_")), lines  # located at the `import flashinfer` line


def test_a_bad_setting_is_silent_in_processes_that_load_no_kernel_library(tmp_path, fake):
    """``FMHA_GUARD=bogus pip --version`` prints nothing: the fallback is warned about only
    where a guarded kernel library is imported."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(PTH, site_dir)
    proc = run_script(tmp_path, f"""
        import site, sys
        site.addsitedir({str(site_dir)!r})
        site.main()
        import json, logging  # work of a process that never touches FlashInfer
        print("RESULT", any(type(finder).__name__ == "ArmedGuard" for finder in sys.meta_path))
    """, fake=fake, env=clean_env(FMHA_GUARD="bogus", FMHA_GUARD_ACTION="loud"), flags=("-S",))
    assert proc.stdout.split() == ["RESULT", "True"] and proc.stderr == ""


def test_fallback_warning_through_warning_filters_at_import(tmp_path, fake):
    """Each fallback warns once, as an FmhaGuardConfigWarning (``-W error::`` makes the
    import raise it, although Python could not resolve that category at start)."""
    code = """
        import sys, warnings
        import runtime_checks.startup
        runtime_checks.startup.activate()
        try:
            import flashinfer.decode
        except Exception as exc:
            print("RAISED", type(exc).__name__, exc)
        import flashinfer.prefill, flashinfer.mla
        from runtime_checks.state import STATE
        print("RESULT", STATE.level, STATE.action, runtime_checks.is_installed())
    """
    env = clean_env(FMHA_GUARD="bogus", FMHA_GUARD_ACTION="loud")
    proc = run_script(tmp_path, code, fake=fake, env=env)
    warned = [line for line in proc.stderr.splitlines() if "FmhaGuardConfigWarning" in line]
    assert len(warned) == 2 and "FMHA_GUARD='bogus'" in warned[0] and "FMHA_GUARD_ACTION='loud'" in warned[1]
    assert "RESULT shapes raise True" in proc.stdout and "RAISED" not in proc.stdout
    strict = run_script(tmp_path, code, fake=fake, env=env, flags=("-W", "error::guardrails.errors.FmhaGuardConfigWarning"))
    assert "RAISED FmhaGuardConfigWarning FMHA_GUARD='bogus'" in strict.stdout, strict.stdout + strict.stderr
    assert "RESULT shapes raise True" in strict.stdout  # the guard was installed before the warning


def test_an_info_line_says_the_guard_is_active(tmp_path, fake):
    proc = run_script(tmp_path, """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(name)s %(message)s")
        import runtime_checks
        runtime_checks.install("values", "warn")
        import flashinfer
        runtime_checks.uninstall()
    """, fake=fake)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOG INFO fmha_guard")]
    assert len(lines) == 2, proc.stdout
    assert "guard active (level=values, action=warn); nothing patched yet: entry points are patched when flashinfer" in lines[0]
    assert "guard active (level=values, action=warn) for flashinfer; 8 entry points patched: " in lines[1]
    assert "flashinfer.decode.trtllm_batch_decode_with_kv_cache" in lines[1]
    pending = lines[1].partition("; patched when imported: ")[2].split(", ")  # modules the fake does not have
    assert not {"flashinfer.decode", "flashinfer.prefill", "flashinfer.mla"} & set(pending), pending


_SPAWN_PARENT = """
import json, multiprocessing, os, sys


def child(queue):
    before = sorted(m for m in ("flashinfer", "guardrails.models", "pydantic", "torch") if m in sys.modules)
    import flashinfer.decode
    queue.put({
        "before": before,
        "startup": "runtime_checks.startup" in sys.modules,
        "guarded": hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__"),
        "method": hasattr(flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run, "__fmha_guard__"),
    })


if __name__ == "__main__":
    assert "FMHA_GUARD" not in os.environ
    os.environ["FMHA_GUARD"] = "shapes"  # only the worker starts with it
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    worker = ctx.Process(target=child, args=(queue,))
    worker.start()
    result = queue.get(timeout=120)
    worker.join(60)
    import flashinfer.decode
    result["parent_guarded"] = hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache, "__fmha_guard__")
    result["exitcode"] = worker.exitcode
    print("RESULT", json.dumps(result, sort_keys=True))
"""


def _installed_pth() -> Path | None:
    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        candidate = Path(directory) / PTH.name
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("where", ["user-site", "installed"])
def test_spawned_worker_inherits_the_guard(tmp_path, fake, where):
    env = clean_env()
    if where == "installed":
        installed = _installed_pth()
        if installed is None:
            pytest.skip("fmha-guardrails is not installed with its .pth here (pip install -e . puts it in site-packages)")
        assert installed.read_text() == PTH.read_text(), f"{installed} is stale: reinstall the package"
    else:  # the user site dir is a real site dir, read before the global one
        env["PYTHONUSERBASE"] = str(tmp_path / "userbase")
        probe = subprocess.run(
            [sys.executable, "-c", "import site; print(site.ENABLE_USER_SITE); print(site.getusersitepackages())"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        if probe[0] != "True":
            pytest.skip("user site-packages disabled in this interpreter (venv without system site-packages)")
        Path(probe[1]).mkdir(parents=True)
        shutil.copy(PTH, probe[1])
    proc = run_script(tmp_path, _SPAWN_PARENT, fake=fake, env=env)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    assert json.loads(line[len("RESULT "):]) == {
        "before": [], "startup": True, "guarded": True, "method": True, "parent_guarded": False, "exitcode": 0,
    }, proc.stderr


# ----------------------------------------------------------------- the real flashinfer

def _require_flashinfer() -> None:
    if importlib.util.find_spec("flashinfer") is None:
        pytest.skip("flashinfer-python is not installed (see the README's test set-up)")


def _entry_objects(entry):
    """(owner, name, value) of an entry point and its aliases in the imported real FlashInfer."""
    module = sys.modules[entry.module]
    if not entry.is_method:
        return [(module, entry.qualname, vars(module)[entry.qualname])]
    cls_name, name = entry.qualname.split(".")
    cls = vars(module)[cls_name]
    return [(cls, attr, vars(cls)[attr]) for attr in (name, *entry.aliases)]


@pytest.fixture
def clean_guard():
    from runtime_checks import activation

    activation.uninstall()
    yield
    activation.uninstall()


def test_real_flashinfer_install_after_import_and_uninstall(clean_guard):
    _require_flashinfer()
    import flashinfer  # noqa: F401  (imports torch: CPU is fine)
    import flashinfer.decode  # noqa: F401
    import flashinfer.mla  # noqa: F401
    import flashinfer.prefill  # noqa: F401
    from runtime_checks import activation
    from runtime_checks.kernel_specs import ENTRY_POINTS

    ENTRY_POINTS = [e for e in ENTRY_POINTS if e.module.partition(".")[0] == "flashinfer"]  # the one installed
    before = {(id(owner), name): value for entry in ENTRY_POINTS for owner, name, value in _entry_objects(entry)}
    functions = {id(value) for entry in ENTRY_POINTS if not entry.is_method for _, _, value in _entry_objects(entry)}
    holders = [(module, key) for name, module in list(sys.modules.items()) if name.partition(".")[0] == "flashinfer"
               and isinstance(module, types.ModuleType) for key, value in list(vars(module).items()) if id(value) in functions]
    assert len(holders) > len(functions)  # re-exports exist (mla in decode and mla._core)
    holder_values = [vars(module)[key] for module, key in holders]

    activation.install("shapes")
    for entry in ENTRY_POINTS:
        objects = _entry_objects(entry)
        owner, name, value = objects[0]
        assert value.__fmha_guard__ == entry and value.__wrapped__ is before[(id(owner), name)], entry
        for _, alias, partial in objects[1:]:
            if isinstance(before[(id(owner), alias)], functools.partialmethod):  # run_return_lse
                assert isinstance(partial, functools.partialmethod) and partial.func is value, alias
                assert partial.keywords == before[(id(owner), alias)].keywords == {"return_lse": True}
            else:  # a plain alias: begin_forward = plan
                assert partial is value, alias
    for module, key in holders:
        assert hasattr(vars(module)[key], "__fmha_guard__"), f"{module.__name__}.{key}"
    activation.install("values")  # idempotent
    assert all(not hasattr(v.__wrapped__, "__fmha_guard__") for e in ENTRY_POINTS for _, _, v in _entry_objects(e)[:1])

    activation.uninstall()
    for entry in ENTRY_POINTS:
        for owner, name, value in _entry_objects(entry):
            assert value is before[(id(owner), name)], f"{entry.module}.{entry.qualname}: {name}"
    assert [vars(module)[key] for module, key in holders] == holder_values
    assert all(a is b for a, b in zip([vars(m)[k] for m, k in holders], holder_values))


def test_real_flashinfer_import_hook(tmp_path):
    _require_flashinfer()
    run_script(tmp_path, """
        import functools, sys
        import runtime_checks
        from runtime_checks.kernel_specs import ENTRY_POINTS
        ENTRY_POINTS = [e for e in ENTRY_POINTS if e.module.partition(".")[0] == "flashinfer"]  # the one installed
        runtime_checks.install("shapes")
        import flashinfer                                               # SGLang style
        from flashinfer.decode import trtllm_batch_decode_with_kv_cache  # vLLM style, after activation
        from flashinfer import BatchDecodeWithPagedKVCacheWrapper, BatchPrefillWithPagedKVCacheWrapper
        from flashinfer.mla import trtllm_batch_decode_with_kv_cache_mla
        guards = {}
        for entry in ENTRY_POINTS:
            owner = sys.modules[entry.module]
            for part in entry.qualname.split(".")[:-1]:
                owner = getattr(owner, part)
            value = getattr(owner, entry.qualname.split(".")[-1])
            assert value.__fmha_guard__ == entry, entry
            guards[entry] = value
            for alias in entry.aliases:
                assert getattr(vars(owner)[alias], "func", vars(owner)[alias]) is value, alias
        assert trtllm_batch_decode_with_kv_cache is guards[ENTRY_POINTS[0]]
        assert flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla is trtllm_batch_decode_with_kv_cache_mla
        assert sys.modules["flashinfer.mla._core"].trtllm_batch_decode_with_kv_cache_mla is trtllm_batch_decode_with_kv_cache_mla
        assert hasattr(trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
        assert BatchDecodeWithPagedKVCacheWrapper is flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper
        assert type(flashinfer.decode.__loader__).__name__ == "SourceFileLoader"
        runtime_checks.uninstall()
        for entry, guard in guards.items():
            owner = sys.modules[entry.module]
            for part in entry.qualname.split(".")[:-1]:
                owner = getattr(owner, part)
            assert vars(owner)[entry.qualname.split(".")[-1]] is guard.__wrapped__, entry
            for alias in entry.aliases:
                assert getattr(vars(owner)[alias], "func", vars(owner)[alias]) is guard.__wrapped__, alias
        assert not hasattr(sys.modules["flashinfer.mla._core"].trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
        assert not hasattr(flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla, "__fmha_guard__")
    """, fake=None)
