"""The mutation-testing lists still name real code and real tests.

``make mutation`` and ``tests/mutation/hand_mutants.py`` run rarely; when a module or a
test moves, their lists would go stale without anyone noticing until the next run. This
checks, in milliseconds, that every target file and every listed test exists, that every
hand-made mutant's text occurs exactly once in its file (so it still applies), that
every test it names is a test function in that file, and that every accepted equivalent
mutant gives a reason.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MUTATION = ROOT / "tests" / "mutation"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_mutation_{name}", MUTATION / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = _load("run")
hand = _load("hand_mutants")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
    }


def _check_node(node: str) -> None:
    file, _, rest = node.partition("::")
    path = ROOT / file
    assert path.is_file(), f"{node}: no such test file"
    if rest:
        name = rest.split("[", 1)[0]
        assert name in _test_functions(path), f"{node}: no such test in {file}"


@pytest.mark.parametrize("target", run.load_targets(), ids=lambda t: t.module)
def test_every_target_and_its_tests_exist(target):
    source = ROOT / target.module
    assert source.is_file(), f"{target.module}: moved? update tests/mutation/targets.toml"
    assert target.tests
    for node in target.tests:
        _check_node(node)
    text = source.read_text()
    for name in target.functions:
        assert f"def {name}(" in text, f"{target.module}: no function {name}"


@pytest.mark.parametrize("mutant", hand.MUTANTS, ids=lambda m: m.name)
def test_every_hand_mutant_still_applies(mutant):
    text = (ROOT / mutant.file).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: update tests/mutation/hand_mutants.py"
    assert mutant.old != mutant.new
    for node in (*mutant.tests, *mutant.must_fail):
        _check_node(node)
    # Each test that must fail is one the driver runs.
    for prefix in mutant.must_fail:
        assert any(prefix.startswith(t) for t in mutant.tests), prefix


def test_hand_mutant_names_are_unique():
    names = [m.name for m in hand.MUTANTS]
    assert len(names) == len(set(names))


def test_every_equivalent_mutant_has_a_reason():
    entries = run.load_allowlist()  # exits on an entry without mutant, mutated or reason
    assert entries
    for entry in entries:
        assert len(entry["reason"].split()) >= 3, entry


def test_mutation_runs_use_the_small_hypothesis_profile_and_make_test_does_not():
    from hypothesis import settings

    from tests import conftest

    assert run.job_env()["HYPOTHESIS_PROFILE"] == "mutation"
    assert settings.get_profile("mutation").max_examples == conftest.MUTATION_MAX_EXAMPLES
    # This run is not a mutation run: its profile keeps Hypothesis's full example count.
    assert conftest.HYPOTHESIS_PROFILE != "mutation"
    assert settings.default.max_examples >= 100


def test_the_mutation_cap_lowers_a_property_that_asks_for_more_examples():
    from types import SimpleNamespace

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests import conftest

    seen: list[int] = []

    @settings(max_examples=300, database=None)
    @given(st.integers())
    def prop(n: int) -> None:
        seen.append(n)

    @settings(max_examples=5, database=None)
    @given(st.integers())
    def small(n: int) -> None:
        seen.append(n)

    items = [SimpleNamespace(obj=prop), SimpleNamespace(obj=small), SimpleNamespace(obj=len)]
    assert conftest.cap_examples(items, 25) == 1  # `small` asks for fewer already
    assert prop._hypothesis_internal_use_settings.max_examples == 25
    assert small._hypothesis_internal_use_settings.max_examples == 5
    prop()
    assert 0 < len(seen) <= 25


def test_a_mutant_that_only_deletes_a_line_is_named_by_what_it_deleted():
    source = ["def f(x):", "    return g(", "        a=1,", "        b=2,", "    )"]
    diff = (
        "--- f.py\n+++ f.py\n@@ -1,5 +1,4 @@\n"
        " def f(x):\n     return g(\n-        a=1,\n         b=2,\n     )\n"
    )
    assert run.locate(diff, "m.x_f__mutmut_3", source) == (3, "(removed) a=1,")
    changed = diff.replace("-        a=1,\n", "-        a=1,\n+        a=None,\n")
    assert run.locate(changed, "m.x_f__mutmut_4", source) == (3, "a=None,")
