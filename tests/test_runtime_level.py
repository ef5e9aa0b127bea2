"""FMHA_GUARD parsing (guardrails.config, what every reader uses) and the check_launch hook."""

from __future__ import annotations

import warnings

import pytest
import torch

from guardrails import FmhaInvariantError, config
from guardrails.config import ACTION_ENV_VAR
from guardrails.config import LEVEL_ENV_VAR as ENV_VAR
from guardrails.config import Action, GuardConfig, GuardConfigError, Level, parse_action, parse_level
from guardrails.errors import FmhaGuardConfigWarning
from runtime_checks import check_launch
from tests.strategies import build_case


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, Level.OFF),
        ({ENV_VAR: ""}, Level.OFF),
        ({ENV_VAR: "off"}, Level.OFF),
        ({ENV_VAR: "0"}, Level.OFF),
        ({ENV_VAR: "OFF "}, Level.OFF),
        ({ENV_VAR: "shapes"}, Level.SHAPES),
        ({ENV_VAR: "Shapes"}, Level.SHAPES),
        ({ENV_VAR: "1"}, Level.SHAPES),
        ({ENV_VAR: "values"}, Level.VALUES),
        ({ENV_VAR: "2"}, Level.VALUES),
        *[({ENV_VAR: word}, Level.SHAPES) for word in ("true", "on", "yes", "enable", "enabled", " TRUE ", "On")],
        *[({ENV_VAR: word}, Level.OFF) for word in ("false", "no", "disable", "disabled", "False")],
    ],
)
def test_level_from_env(environ, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a spelling we know warns about nothing
        config_read = GuardConfig.from_env(environ)
    assert config_read.level is expected and config_read.fallbacks == ()


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which fallback warnings this process already issued (each is issued once)."""
    monkeypatch.setattr(config, "_warned_fallbacks", set())


@pytest.mark.parametrize("bad", ["full", "3", "shape", "bogus"])
def test_unknown_level_in_the_environment_fails_closed_at_shapes_with_one_warning(bad, fresh_warnings):
    with pytest.warns(FmhaGuardConfigWarning) as record:
        first = GuardConfig.from_env({ENV_VAR: bad})
        again = GuardConfig.from_env({ENV_VAR: bad})
    assert first.level is again.level is Level.SHAPES and first.action is Action.RAISE
    assert len(record) == 1  # once per process
    message = str(record[0].message)
    assert message == first.fallbacks[0]
    assert f"FMHA_GUARD={bad!r}" in message and "shapes" in message and "never syncs" in message
    for allowed in ("off", "shapes", "values"):
        assert allowed in message
    assert record[0].filename == __file__  # located at the reader's caller, not inside guardrails


def test_unknown_action_in_the_environment_falls_back_to_raise(fresh_warnings):
    with pytest.warns(FmhaGuardConfigWarning, match="FMHA_GUARD_ACTION='loud'.*raise, warn.*violations raise"):
        read = GuardConfig.from_env({ENV_VAR: "values", ACTION_ENV_VAR: "loud"})
    assert (read.level, read.action) == (Level.VALUES, Action.RAISE)


def test_from_env_without_warning_keeps_the_fallbacks_for_later(fresh_warnings):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = GuardConfig.from_env({ENV_VAR: "bogus", ACTION_ENV_VAR: "loud"}, warn=False)
    assert (read.level, read.action) == (Level.SHAPES, Action.RAISE) and len(read.fallbacks) == 2
    assert read == GuardConfig(Level.SHAPES, Action.RAISE)  # fallbacks are not part of the value
    with pytest.warns(FmhaGuardConfigWarning) as record:
        read.warn_fallbacks()
        read.warn_fallbacks()
    assert [str(w.message) for w in record] == list(read.fallbacks)


def test_explicit_arguments_are_still_programmer_errors():
    for bad in ("bogus", "full", 7):
        with pytest.raises(GuardConfigError, match="level=.*is not a guard level"):
            GuardConfig.resolve(level=bad)
        with pytest.raises(GuardConfigError):
            parse_level(bad)
    with pytest.raises(GuardConfigError, match="action='loud' is not a guard action"):
        GuardConfig.resolve("shapes", "loud")
    with pytest.raises(GuardConfigError):
        parse_action("loud")
    assert parse_level("on") is Level.SHAPES and parse_level("no") is Level.OFF


def test_resolve_reads_and_warns_only_about_what_it_takes_from_the_environment(fresh_warnings):
    env = {ENV_VAR: "bogus", ACTION_ENV_VAR: "loud"}
    with pytest.warns(FmhaGuardConfigWarning) as record:
        resolved = GuardConfig.resolve(level="values", environ=env)
    assert (resolved.level, resolved.action) == (Level.VALUES, Action.RAISE)
    assert [str(w.message).split("=")[0] for w in record] == ["FMHA_GUARD_ACTION"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GuardConfig.resolve("off", "warn", environ=env) == GuardConfig(Level.OFF, Action.WARN)


def test_level_from_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "values")
    assert GuardConfig.from_env().level is Level.VALUES
    monkeypatch.delenv(ENV_VAR)
    assert GuardConfig.from_env().level is Level.OFF


def _dp_padded():  # a shapes-level bug (SGLang #21649)
    return build_case("extend", [3, 2], [4, 9]).with_batch(batch_size=4)


def _bad_page_id():  # a values-only bug
    case = build_case("extend", [3, 2], [4, 9])
    return case.with_batch(page_table=torch.full_like(case.batch.page_table, case.kv_cache.num_pages))


def test_check_launch_off_does_nothing(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    for case in (_dp_padded(), _bad_page_id()):
        check_launch(case.batch, case.kv_cache)
    monkeypatch.setenv(ENV_VAR, "off")
    check_launch(_dp_padded().batch)
    # OFF returns before touching the batch at all
    check_launch(object(), level="off")


def test_check_launch_shapes(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "shapes")
    with pytest.raises(FmhaInvariantError) as info:
        check_launch(_dp_padded().batch)
    assert info.value.invariant == "batch-size"
    bad = _bad_page_id()
    check_launch(bad.batch, bad.kv_cache)  # value bugs pass at SHAPES


def test_check_launch_values(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "values")
    bad = _bad_page_id()
    with pytest.raises(FmhaInvariantError) as info:
        check_launch(bad.batch, bad.kv_cache)
    assert info.value.invariant == "page-id-range"
    good = build_case("decode", [1, 1], [4, 9])
    check_launch(good.batch, good.kv_cache)


def test_check_launch_explicit_level_overrides_env(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    bad = _bad_page_id()
    with pytest.raises(FmhaInvariantError):
        check_launch(bad.batch, bad.kv_cache, level=Level.VALUES)
    monkeypatch.setenv(ENV_VAR, "values")
    check_launch(bad.batch, bad.kv_cache, level="shapes")


def test_check_launch_bad_env_value_fails_closed(monkeypatch, fresh_warnings):
    """An unknown FMHA_GUARD checks at shapes (it used to raise GuardConfigError), warning once."""
    monkeypatch.setenv(ENV_VAR, "loud")
    with pytest.warns(FmhaGuardConfigWarning, match="FMHA_GUARD='loud'") as record:
        with pytest.raises(FmhaInvariantError) as info:
            check_launch(_dp_padded().batch)
        bad = _bad_page_id()
        check_launch(bad.batch, bad.kv_cache)  # shapes: the value bug passes
    assert info.value.invariant == "batch-size" and len(record) == 1
