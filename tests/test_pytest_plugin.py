"""The pytest plugin (``runtime_checks.pytest_plugin``): an engine's own tests under the guard.

Each case runs pytest in a subprocess (pytester) over a small engine test file that calls
a fake ``flashinfer`` (tests/test_runtime_activation.py's), with plugin autoloading off
and the plugin named with ``-p``, so the result is the same whether or not this
environment's install registered the ``pytest11`` entry point.
"""

from __future__ import annotations

import configparser
import os
from importlib import metadata

import pytest

from .test_runtime_activation import REPO, write_fake_flashinfer

pytest_plugins = ["pytester"]

_LAUNCHES = '''
import sys

import pytest

import flashinfer.decode
import runtime_checks
from guardrails import FmhaInvariantError
from tests.launch_args import decode_kwargs, paged_case


def launch(bad=False):
    case = paged_case([1] * 3, [5, 9, 17], page_size=4, num_kv_heads=2, group=2, head_dim=8)
    kwargs = decode_kwargs(case)
    if bad:
        table = case.page_table.clone()
        table[1, 0] = case.num_pages + 3  # page-id-range: a values-level violation
        kwargs["block_tables"] = table
    return flashinfer.decode.trtllm_batch_decode_with_kv_cache(**kwargs)
'''

_ENGINE_TESTS = _LAUNCHES + '''

def test_good_launch():
    assert launch()[0] == "decode"


def test_bad_launch():
    assert launch(bad=True)[0] == "decode"


def test_guard_state():
    imported = "runtime_checks.activation" in sys.modules  # before is_installed() imports it
    print("GUARD", imported, runtime_checks.is_installed())
'''

_FIXTURE_TESTS = _LAUNCHES + '''

@pytest.mark.fmha_guard("values")
def test_marker(fmha_guard):
    assert fmha_guard.level == 2 and fmha_guard.action == "raise" and runtime_checks.is_installed()
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        launch(bad=True)
    assert fmha_guard.launches == 1


@pytest.mark.fmha_guard(level="values", action="warn")
def test_marker_keywords(fmha_guard):
    with pytest.warns(UserWarning, match="page-id-range"):
        assert launch(bad=True)[0] == "decode"


@pytest.mark.parametrize("fmha_guard", ["shapes", ("values", "warn")], indirect=True)
def test_param(fmha_guard):
    assert (str(fmha_guard.level), str(fmha_guard.action)) in {("shapes", "raise"), ("values", "warn")}


def test_default(fmha_guard):
    assert (str(fmha_guard.level), str(fmha_guard.action)) == ("shapes", "raise")


def test_uninstalled_after():
    assert not runtime_checks.is_installed()
'''


@pytest.fixture
def engine(pytester, monkeypatch):
    write_fake_flashinfer(pytester.path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), str(REPO)]))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("FLASHINFER_NO_DOWNLOAD", "1")
    for name in ("FMHA_GUARD", "FMHA_GUARD_ACTION"):
        monkeypatch.delenv(name, raising=False)
    return pytester


def _run(pytester, *args: str):
    return pytester.runpytest_subprocess("-p", "runtime_checks.pytest_plugin", "-p", "no:cacheprovider", "-s", *args)


def test_inactive_without_the_option(engine):
    engine.makepyfile(test_engine=_ENGINE_TESTS)
    result = _run(engine)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*GUARD False False*"])  # nothing installed, activation never imported
    result.stdout.no_fnmatch_line("*fmha-guard*")


def test_session_guard_fails_the_test_that_made_the_violation(engine):
    engine.makepyfile(test_engine=_ENGINE_TESTS)
    result = _run(engine, "--fmha-guard=values")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "fmha-guard: runtime guard on (level=values, action=raise)" in out
    assert "FAILED test_engine.py::test_bad_launch - guardrails.errors.FmhaInvariantError" in out
    assert "FmhaInvariantError: [page-id-range] the page table points outside the KV cache" in out
    assert "In flashinfer.decode.trtllm_batch_decode_with_kv_cache, called from " in out
    assert "fmha-guard violations (raised, level=values)" in out
    assert "test_engine.py::test_bad_launch: [page-id-range]" in out
    # shapes never reads the page table: the same session passes
    _run(engine, "--fmha-guard", "shapes").assert_outcomes(passed=3)


def test_session_guard_in_warn_mode_lists_the_violations(engine):
    engine.makepyfile(test_engine=_ENGINE_TESTS)
    result = _run(engine, "--fmha-guard=values", "--fmha-guard-action=warn")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "fmha-guard violations (let through, level=values)" in out
    assert "test_engine.py::test_bad_launch: [page-id-range]" in out
    assert "FmhaInvariantWarning" in out  # pytest's warnings summary too
    strict = _run(engine, "--fmha-guard=values", "--fmha-guard-action=warn",
                  "-W", "error::guardrails.errors.FmhaInvariantWarning")
    strict.assert_outcomes(passed=2, failed=1)


def test_bad_options_are_usage_errors(engine):
    engine.makepyfile(test_engine=_ENGINE_TESTS)
    bad = _run(engine, "--fmha-guard=loud")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--fmha-guard='loud' is not a guard level" in bad.stderr.str()
    alone = _run(engine, "--fmha-guard-action=warn")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR and "needs --fmha-guard" in alone.stderr.str()


def test_fixture_and_marker(engine):
    engine.makepyfile(test_fixture=_FIXTURE_TESTS)
    _run(engine).assert_outcomes(passed=6)


def test_registered_as_a_pytest11_entry_point(repo_root):
    parser = configparser.ConfigParser()
    parser.read(repo_root / "setup.cfg")
    lines = [line.strip() for line in parser["options.entry_points"]["pytest11"].splitlines() if line.strip()]
    assert lines == ["fmha_guard = runtime_checks.pytest_plugin"]
    installed = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "runtime_checks.pytest_plugin"]
    if not installed:
        pytest.skip("this environment's install predates the entry point (pip install -e . registers it)")
    assert [ep.name for ep in installed] == ["fmha_guard"]


def test_the_entry_point_loads_the_plugin_by_itself(engine, monkeypatch):
    """What an install registers (a dist-info with the pytest11 entry point): pytest's
    autoload finds the plugin with no -p, and our own suite's options stay untouched."""
    dist = engine.path / "site" / "fmha_guard_entry-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fmha-guard-entry\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nfmha_guard = runtime_checks.pytest_plugin\n")
    engine.makepyfile(test_engine=_ENGINE_TESTS)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(dist.parent), os.environ["PYTHONPATH"]]))
    result = engine.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--fmha-guard=values")
    result.assert_outcomes(passed=2, failed=1)
    assert "fmha-guard: runtime guard on (level=values, action=raise)" in result.stdout.str()
