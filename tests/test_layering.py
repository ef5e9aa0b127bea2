"""The package's dependency arrows point one way, checked on the real import graph (grimp,
the graph library behind import-linter).

    guardrails  <-  lint_rules, runtime_checks  <-  runtime_checks.reference_backend  <-  fmha_guard

``guardrails`` (models, invariants, errors, configuration) imports neither torch, libcst nor
any other package of ours; ``lint_rules`` and ``runtime_checks`` do not import each other;
only the reference backend imports torch at module level; no package holds an import cycle.
Imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is still an arrow.
"""

from __future__ import annotations

import grimp
import pytest

OURS = ("guardrails", "lint_rules", "runtime_checks", "fmha_guard")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*OURS, include_external_packages=True)


def _imports(graph, importer: str, imported: str) -> list[str]:
    """Every direct import from a module under ``importer`` into one under ``imported``, as text."""
    found = graph.find_matching_direct_imports(import_expression=f"{importer}.** -> {imported}.**")
    found += graph.find_matching_direct_imports(import_expression=f"{importer}.** -> {imported}")
    found += graph.find_matching_direct_imports(import_expression=f"{importer} -> {imported}.**")
    return sorted({f"{i['importer']} -> {i['imported']}" for i in found})


@pytest.mark.parametrize(
    "importer, imported",
    [
        ("guardrails", "lint_rules"),
        ("guardrails", "runtime_checks"),
        ("guardrails", "fmha_guard"),
        ("guardrails", "torch"),
        ("guardrails", "libcst"),
        ("lint_rules", "runtime_checks"),
        ("lint_rules", "fmha_guard"),
        ("lint_rules", "torch"),
        ("runtime_checks", "lint_rules"),
        ("runtime_checks", "fmha_guard"),
    ],
)
def test_arrow_points_one_way(graph, importer, imported):
    assert _imports(graph, importer, imported) == []


def test_only_the_reference_backend_imports_torch_at_module_level(graph):
    offenders = []
    for module in sorted(graph.find_descendants("runtime_checks")):
        if module.startswith("runtime_checks.reference_backend"):
            continue
        for detail in graph.get_import_details(importer=module, imported="torch"):
            offenders.append(f"{module}:{detail['line_number']} {detail['line_contents']}")
    # runtime_checks may touch torch only inside functions that run once FlashInfer (hence
    # torch) is loaded: every such line is indented.
    assert [o for o in offenders if not o.split(" ", 1)[1].startswith(" ")] == []


def test_nothing_below_the_reference_backend_imports_it(graph):
    backend = "runtime_checks.reference_backend"
    rest = [m for m in graph.find_descendants("runtime_checks") if not m.startswith(backend)]
    assert sorted(
        f"{m} -> {i}" for m in rest for i in graph.find_modules_directly_imported_by(m) if i.startswith(backend)
    ) == []


def _cycles(graph, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module inside ``package`` (Tarjan)."""
    modules = sorted(graph.find_descendants(package) | {package})
    members = set(modules)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in members) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


@pytest.mark.parametrize("package", OURS)
def test_no_import_cycle_inside_a_package(graph, package):
    # a package's __init__ importing its own submodules lazily is not a cycle worth naming
    cycles = [c for c in _cycles(graph, package) if not (len(c) == 2 and package in c)]
    assert cycles == []
