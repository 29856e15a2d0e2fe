"""Architecture rules that import-linter's contracts cannot say alone.

* No import cycles among the project's modules, imports inside functions and under
  ``TYPE_CHECKING`` included: grimp (import-linter's graph library) builds the graph and
  every strongly connected component of more than one module is a cycle.
* The contracts in pyproject.toml stay complete: every ``idp_service`` package sits in a
  layer of the layers contract, and the scim contract forbids every package but the
  ones scim may use, so a new feature package cannot slip past them.
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOT_PACKAGES = ("idp_service", "trust_protocol", "agent", "scim", "posture_checks")

# Cycles tolerated while a fix is under way. Empty since the structure issue landed, and it
# stays so: the test fails on any cycle not listed here, and also on a listed cycle that
# no longer exists exactly as written. Never add to it; fix the dependency direction.
KNOWN_CYCLES: set[frozenset[str]] = set()


def strongly_connected_components(edges: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); components of one module
    are left out unless the module imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(frozenset(component))
    return found


def import_cycles(graph: grimp.ImportGraph) -> list[frozenset[str]]:
    """Every cycle among the graph's modules, as the set of modules it joins."""
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    return strongly_connected_components(edges)


def describe(graph: grimp.ImportGraph, cycle: frozenset[str]) -> str:
    """The modules of a cycle, and one closed path through them with line numbers."""
    first = min(cycle)
    lines = [f"{len(cycle)} modules: {', '.join(sorted(cycle))}"]
    for a in sorted(graph.find_modules_directly_imported_by(first) & cycle):
        back = graph.find_shortest_chain(importer=a, imported=first)
        if back is None:
            continue
        path = (first, *back)
        for importer, imported in zip(path, path[1:], strict=False):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(f"l.{d['line_number']}" for d in details)
            lines.append(f"    {importer} -> {imported} ({where})")
        break
    return "\n".join(lines)


@pytest.fixture(scope="module")
def project_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOT_PACKAGES, cache_dir=None)


def test_no_import_cycles_beyond_the_known_ones(project_graph: grimp.ImportGraph) -> None:
    cycles = set(import_cycles(project_graph))
    new = sorted(cycles - KNOWN_CYCLES, key=sorted)
    gone = sorted(KNOWN_CYCLES - cycles, key=sorted)
    problems = []
    if new:
        problems.append(
            "Import cycles (fix the dependency direction; an import inside a function "
            "still counts):\n" + "\n".join(describe(project_graph, c) for c in new)
        )
    if gone:
        problems.append(
            "KNOWN_CYCLES lists cycles that no longer exist as written; delete these "
            "entries:\n" + "\n".join("    " + ", ".join(sorted(c)) for c in gone)
        )
    assert not problems, "\n\n".join(problems)


def test_the_cycle_finder_sees_imports_inside_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above must be able to fail: a cycle closed by an import inside a
    function, and one under TYPE_CHECKING, are both found; a one-way import is not."""
    pkg = tmp_path / "cyclic_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_probe import b\n")
    (pkg / "b.py").write_text(
        textwrap.dedent(
            """
            def late():
                from cyclic_probe import a
                return a
            """
        )
    )
    (pkg / "c.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from cyclic_probe import a
            if TYPE_CHECKING:
                from cyclic_probe import d
            """
        )
    )
    (pkg / "d.py").write_text("import cyclic_probe.c\n")
    (pkg / "e.py").write_text("import cyclic_probe.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic_probe", cache_dir=None)
    assert set(import_cycles(graph)) == {
        frozenset({"cyclic_probe.a", "cyclic_probe.b"}),
        frozenset({"cyclic_probe.c", "cyclic_probe.d"}),
    }
    sys.modules.pop("cyclic_probe", None)


def test_strongly_connected_components_on_a_known_graph() -> None:
    edges = {
        "a": ["b"],
        "b": ["c"],
        "c": ["a", "d"],
        "d": ["e"],
        "e": ["d"],
        "f": ["f"],
        "g": ["a"],
    }
    assert set(strongly_connected_components(edges)) == {
        frozenset("abc"),
        frozenset("de"),
        frozenset("f"),
    }


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def idp_service_children(graph: grimp.ImportGraph) -> set[str]:
    return graph.find_children("idp_service")


def test_every_idp_service_package_sits_in_a_layer(project_graph: grimp.ImportGraph) -> None:
    layers = contracts()["layers"]["layers"]
    placed = {
        name.strip().strip("()") for layer in layers for name in layer.replace("|", ":").split(":")
    }
    unplaced = sorted(idp_service_children(project_graph) - placed)
    assert not unplaced, (
        f"Put {', '.join(unplaced)} in a layer of the 'layers' contract in pyproject.toml "
        "(features go in the second layer)."
    )


def test_scim_is_kept_from_every_package_but_platform_directory_and_tokens(
    project_graph: grimp.ImportGraph,
) -> None:
    forbidden = set(contracts()["scim-uses-platform"]["forbidden_modules"])
    allowed = {
        "idp_service.platform",
        "idp_service.directory",
        "idp_service.tokens",
        "idp_service.token_tables",
    }
    missing = sorted(idp_service_children(project_graph) - allowed - forbidden)
    assert not missing, (
        f"Add {', '.join(missing)} to forbidden_modules of the 'scim-uses-platform' contract."
    )
