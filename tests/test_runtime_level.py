"""FMHA_GUARD parsing (guardrails.config, what every reader uses) and the check_launch hook."""

from __future__ import annotations

import pytest
import torch

from guardrails import FmhaInvariantError
from guardrails.config import LEVEL_ENV_VAR as ENV_VAR
from guardrails.config import GuardConfig, Level
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
    ],
)
def test_level_from_env(environ, expected):
    assert GuardConfig.from_env(environ).level is expected


@pytest.mark.parametrize("bad", ["on", "full", "true", "3", "shape"])
def test_level_from_env_rejects_unknown_values(bad):
    with pytest.raises(ValueError) as info:
        GuardConfig.from_env({ENV_VAR: bad})
    message = str(info.value)
    assert "FMHA_GUARD" in message and repr(bad) in message
    for allowed in ("off", "shapes", "values"):
        assert allowed in message


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


def test_check_launch_bad_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "loud")
    with pytest.raises(ValueError, match="FMHA_GUARD"):
        check_launch(_dp_padded().batch)
