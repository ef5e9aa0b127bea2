"""``--output-format junit``: JUnit XML, one ``<testsuite>`` per file with findings, one
failing ``<testcase>`` per finding (``name`` the rule code and name, ``classname`` the
file, ``line``); a file that could not be linted is a ``<testcase>`` with an ``<error>``.
With nothing to report, one passing test case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from .report import Report


def render(report: Report) -> str:
    by_file: dict[str, list[ET.Element]] = defaultdict(list)
    failures = errors = 0
    for f in report.findings():
        path = report.path(f)
        case = ET.Element("testcase", name=f"{f.rule} {f.name}", classname=path, file=path, line=str(f.line))
        failure = ET.SubElement(case, "failure", message=f.message, type=f.rule)
        failure.text = f"{path}:{f.line}:{f.col}: {f.rule} {f.message} (in {f.symbol})"
        by_file[path].append(case)
        failures += 1
    for e in report.errors():
        path = report.path(e)
        case = ET.Element("testcase", name="fmha-guard", classname=path, file=path)
        ET.SubElement(case, "error", message=e.message, type="file-error").text = e.message
        by_file[path].append(case)
        errors += 1
    root = ET.Element("testsuites", name="fmha-guard")
    if not by_file:
        suite = ET.SubElement(root, "testsuite", name="fmha-guard", tests="1", failures="0", errors="0")
        ET.SubElement(suite, "testcase", name="no findings", classname="fmha-guard")
    for path, cases in by_file.items():
        n_fail = sum(1 for c in cases if c.find("failure") is not None)
        suite = ET.SubElement(
            root, "testsuite", name=path, tests=str(len(cases)), failures=str(n_fail), errors=str(len(cases) - n_fail)
        )
        suite.extend(cases)
    root.set("tests", str(max(1, failures + errors)))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
