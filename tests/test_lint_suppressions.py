"""Suppression comments: on the line, on the statement's first line, unused (GR900), invalid (GR901)."""

from __future__ import annotations

import textwrap

from lint_rules import LintConfig, audit_paths, find_rule, lint_source
from lint_rules.engine import RuleSelection
from lint_rules.suppressions import parse_comments

GR001 = find_rule("GR001")

ONE_LINE = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        return trtllm_batch_context_with_kv_cache(query=q, batch_size=forward_batch.batch_size){comment}
'''

MULTI_LINE = '''
class FooBackend:
    def forward_extend(self, q, k, v, layer, forward_batch):
        out = trtllm_batch_context_with_kv_cache({first}
            query=q,
            batch_size=forward_batch.batch_size,{inner}
        )
        return out
'''


def lint(code: str, rules=(GR001,)):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), list(rules), LintConfig())
    assert errors == []
    return [(f.rule, f.line) for f in findings], findings


def test_unsuppressed_finding_is_reported():
    assert lint(ONE_LINE.format(comment=""))[0] == [("GR001", 3)]


def test_suppression_on_the_finding_line():
    got, _ = lint(ONE_LINE.format(comment="  # fmha-guard: ignore[GR001] sizes checked by the caller"))
    assert got == []


def test_suppression_on_the_first_line_of_a_multiline_statement():
    plain, _ = lint(MULTI_LINE.format(first="", inner=""))
    assert plain == [("GR001", 5)]
    got, _ = lint(MULTI_LINE.format(first="  # fmha-guard: ignore[GR001] verified", inner=""))
    assert got == []
    got, _ = lint(MULTI_LINE.format(first="", inner="  # fmha-guard: ignore[gr001]"))
    assert got == []


def test_suppression_elsewhere_in_the_statement_or_method_does_not_apply():
    code = MULTI_LINE.replace("        return out", "        return out  # fmha-guard: ignore[GR001]")
    got, findings = lint(code.format(first="", inner=""))
    assert got == [("GR001", 5), ("GR900", 7)]
    code = MULTI_LINE.replace("            query=q,", "            query=q,  # fmha-guard: ignore[GR001]")
    got, _ = lint(code.format(first="", inner=""))
    assert got == [("GR001", 5), ("GR900", 4)]


def test_several_codes_and_the_unused_one_is_reported():
    got, findings = lint(ONE_LINE.format(comment="  # fmha-guard: ignore[GR001, GR002] both"), rules=(GR001, find_rule("GR002")))
    assert got == [("GR900", 3)]
    (unused,) = findings
    assert unused.name == "unused-suppression" and "GR002" in unused.message and "GR001" not in unused.message
    assert unused.symbol == "FooBackend.forward_extend" and unused.col > 40


def test_unused_suppression_only_for_rules_that_ran():
    comment = "  # fmha-guard: ignore[GR001,GR002]"
    got, _ = lint(ONE_LINE.format(comment=comment), rules=(GR001,))
    assert got == []  # GR002 did not run: not judged


def test_bare_and_malformed_suppressions_are_invalid_and_suppress_nothing():
    for comment, problem in (
        ("  # fmha-guard: ignore", "bare"),
        ("  # fmha-guard: ignore   because", "bare"),
        ("  # fmha-guard: ignore[]", "empty"),
        ("  # fmha-guard: ignore[GR001", "unclosed"),
        ("  # fmha-guard: ignor[GR001]", "unknown directive"),
        ("  # fmha-guard: ignore[GR999]", "unknown rule code GR999"),
        ("  # fmha-guard: ignore[GR900]", "pseudo-rule"),
        ("  # fmha-guard: ignore[padded-batch]", "not a rule code"),
    ):
        got, findings = lint(ONE_LINE.format(comment=comment))
        assert ("GR001", 3) in got, comment
        invalid = [f for f in findings if f.rule == "GR901"]
        assert len(invalid) == 1 and problem in invalid[0].message, (comment, invalid)
        assert invalid[0].name == "invalid-suppression"


def test_comment_text_inside_strings_is_not_a_suppression():
    code = '''
    class FooBackend:
        def forward_extend(self, q, k, v, layer, forward_batch):
            return trtllm_batch_context_with_kv_cache(query="# fmha-guard: ignore[GR001]", batch_size=forward_batch.batch_size)
    '''
    assert lint(code)[0] == [("GR001", 3)]
    good, bad = parse_comments('s = """\n# fmha-guard: ignore\n"""\nx = 1  # fmha-guard: ignore[GR002] why\n')
    assert bad == [] and [(s.line, s.codes, s.reason) for s in good] == [(4, ("GR002",), "why")]


def test_pseudo_rules_can_be_switched_off_and_judge_unparsed_files(tmp_path):
    (tmp_path / "plain.py").write_text("x = 1  # fmha-guard: ignore[GR001] stale\ny = 2  # fmha-guard: ignore\n")
    result = audit_paths([tmp_path], RuleSelection(), jobs=1)
    assert [(f.rule, f.line) for f in result.findings] == [("GR900", 1), ("GR901", 2)]
    assert result.files_parsed == 0  # no rule wanted the file; the comments were still checked
    quiet = audit_paths([tmp_path], RuleSelection(ignore=["GR900", "invalid-suppression"]), jobs=1)
    assert quiet.findings == []
