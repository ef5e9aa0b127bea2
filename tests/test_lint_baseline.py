"""``--write-baseline FILE`` writes it, ``--baseline FILE`` then reports only new findings; keyed on content, not line."""

from __future__ import annotations

import json
import os

from fmha_guard.cli import main

METHOD = '''
    def forward_extend{n}(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
'''


def backend(*methods: str, header: str = "") -> str:
    return header + "class FooBackend:\n" + "".join(methods)


def audit(capsys, root, baseline, *extra, flag="--baseline"):
    code = main(["audit", "--format", "json", "--no-cache", flag, str(baseline), *extra, str(root)])
    out = capsys.readouterr()
    return code, [(f["symbol"], f["line"]) for f in json.loads(out.out)["findings"]], out.err


def test_baseline_written_then_only_new_findings_fail(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    file = src / "foo_backend.py"
    file.write_text(backend(METHOD.format(n="")))
    baseline = tmp_path / "fmha-baseline.json"
    code, found, err = audit(capsys, src, baseline, flag="--write-baseline")
    assert code == 0 and found == [] and "wrote baseline" in err and baseline.is_file()
    assert oct(baseline.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as open() would create it
    rows = json.loads(baseline.read_text())["findings"]
    assert [(r["rule"], r["path"], r["symbol"], r["count"]) for r in rows] == [
        ("GR001", "foo_backend.py", "FooBackend.forward_extend", 1)
    ]
    assert "line" not in rows[0] and len(rows[0]["line_hash"]) == 16

    # moved code (lines added above) stays baselined
    file.write_text(backend(METHOD.format(n=""), header="import os\nimport sys\n\n\n"))
    code, found, err = audit(capsys, src, baseline)
    assert code == 0 and found == [] and "wrote" not in err

    # a second copy of the same line in the same method is new (duplicates are counted)
    dup = METHOD.format(n="").rstrip("\n") + "\n        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size)\n"
    file.write_text(backend(dup))
    code, found, _ = audit(capsys, src, baseline)
    assert code == 1 and found == [("FooBackend.forward_extend", 5)]

    # the same line in another method is new; the old one stays baselined
    file.write_text(backend(METHOD.format(n=""), METHOD.format(n="_v2")))
    code, found, _ = audit(capsys, src, baseline)
    assert code == 1 and found == [("FooBackend.forward_extend_v2", 7)]

    # a changed line is new
    file.write_text(backend(METHOD.format(n="").replace("query=q", "query=q * 2")))
    code, found, _ = audit(capsys, src, baseline)
    assert code == 1 and len(found) == 1

    # --write-baseline replaces the file (atomically, nothing left beside it): accepted again
    code, found, err = audit(capsys, src, baseline, flag="--write-baseline")
    assert code == 0 and "wrote baseline" in err and sorted(p.name for p in tmp_path.iterdir()) == [
        "fmha-baseline.json", "src"
    ]
    assert audit(capsys, src, baseline)[:2] == (0, [])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_text_report_says_how_many_are_baselined(tmp_path, capsys):
    (tmp_path / "foo_backend.py").write_text(backend(METHOD.format(n="")))
    baseline = tmp_path / "b.json"
    assert main(["audit", "--no-cache", "--write-baseline", str(baseline), str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["audit", "--no-cache", "--baseline", str(baseline), str(tmp_path)]) == 0
    assert "1 findings are in the baseline" in capsys.readouterr().out


def test_bad_baseline_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "foo_backend.py").write_text(backend(METHOD.format(n="")))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["audit", "--no-cache", "--baseline", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a fmha-guard baseline" in err and "Traceback" not in err


def test_lint_takes_a_baseline_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "foo_backend.py").write_text(backend(METHOD.format(n="")))
    assert main(["lint", "--no-cache", "--write-baseline", "b.json", "foo_backend.py"]) == 0
    assert main(["lint", "--no-cache", "--baseline", "b.json", "foo_backend.py"]) == 0
    assert main(["lint", "--no-cache", "foo_backend.py"]) == 1
