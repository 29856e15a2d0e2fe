"""The mutation-testing lists still name real code and real tests.

``make mutation`` and ``tests/mutation/hand_mutants.py`` run rarely; when a module or a
test moves, their lists would go stale without anyone noticing until the next run. This
checks, in milliseconds, that every target file and every listed test exists, that every
hand-made mutant's text occurs exactly once in its file (so it still applies), that
every test it names is a test function in that file, that every accepted equivalent
mutant gives a reason, and that no function a target would mutate is decorated (mutmut
silently leaves decorated functions alone) unless ``DECORATED_ALLOWED`` says why.
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


# --- decorated functions ------------------------------------------------------------------
#
# mutmut 3 leaves every decorated function (and everything inside it) unmutated, without a
# word: its mutation/file_mutation.py skips a ``FunctionDef`` with decorators unless the only
# decorator is a bare ``@staticmethod`` or ``@classmethod``. The decorators of a decorated
# *class* (``@dataclass``) are not mutated either, but its methods are, so a class decorator
# is no concern here. The way out is to keep the body in an undecorated function and wrap it
# by assignment (``verify = metrics.verify_path(_verify)``, ``kid = cached_property(_kid)``)
# or, for a ``@property`` (``property(f)`` loses the type for mypy), with a decorated
# one-line delegate ``return self._kind()``, which has nothing left to mutate.

PENDING = "pending: see docs/testing.md"

# (module, qualified name) -> why it may stay decorated. Keep it short.
DECORATED_ALLOWED: dict[tuple[str, str], str] = {
    # Targets still being worked on by their owners; their decorated functions are listed
    # under "Decorated functions" in docs/testing.md.
    ("idp_service/api/core.py", "Call.actor"): PENDING,
    ("idp_service/api/core.py", "Operation.error_statuses"): PENDING,
    ("idp_service/api/core.py", "_audit_probe"): PENDING,
    ("idp_service/api/core.py", "openapi_json"): PENDING,
    ("idp_service/admin/auth.py", "Admin.actor"): PENDING,
}

_UNDECORATED = {"staticmethod", "classmethod"}  # the one decorator mutmut still mutates


def _skipped_by_mutmut(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether mutmut 3 leaves this function unmutated because of its decorators."""
    decorators = node.decorator_list
    if not decorators:
        return False
    only = decorators[0]
    return not (len(decorators) == 1 and isinstance(only, ast.Name) and only.id in _UNDECORATED)


def _is_delegate(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body that is only ``return self._f()`` (after a docstring): nothing to mutate."""
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Return):
        return False
    call = body[0].value
    # No arguments (mutmut would drop one or make it None), and a private name (mutmut swaps
    # string methods such as ``.lower()``).
    if not isinstance(call, ast.Call) or call.args or call.keywords:
        return False
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name.startswith("_")


def decorated_functions(source: str) -> list[tuple[str, str, int]]:
    """Every function mutmut skips for its decorators, nested ones included, as
    (qualified name, the name a target's ``functions`` selects it by, line)."""
    found: list[tuple[str, str, int]] = []

    def walk(node: ast.AST, path: list[str], unit: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                # A top-level function or a method is a unit of mutmut's own; a nested
                # function belongs to the unit it is defined in.
                own = unit or child.name
                if _skipped_by_mutmut(child) and not _is_delegate(child):
                    found.append((".".join([*path, child.name]), own, child.lineno))
                walk(child, [*path, child.name], own)
            elif isinstance(child, ast.ClassDef):
                walk(child, [*path, child.name], unit)
            else:
                walk(child, path, unit)

    walk(ast.parse(source), [], None)
    return found


_EXAMPLE = '''
import functools
@functools.lru_cache
def cached(x):
    return x + 1
def plain(x):
    @wrap
    def inner():
        return x
    return inner
@dataclass
class C:
    @staticmethod
    def s(): return 1
    @classmethod
    def c(cls): return 1
    @staticmethod
    @other
    def both(): return 1
    @property
    def p(self): return self.x > 1
    @property
    def d(self):
        """Doc."""
        return self._d()
    @property
    def k(self): return self._d(self.x)
    @property
    def u(self): return self.name.upper()
'''


def test_the_decorated_function_finder_sees_what_mutmut_skips():
    assert decorated_functions(_EXAMPLE) == [
        ("cached", "cached", 4),
        ("plain.inner", "plain", 8),
        ("C.both", "both", 19),
        ("C.p", "p", 21),
        ("C.k", "k", 27),
        ("C.u", "u", 29),
    ]


@pytest.mark.parametrize("target", run.load_targets(), ids=lambda t: t.module)
def test_no_function_a_target_mutates_is_decorated(target):
    found = decorated_functions((ROOT / target.module).read_text())
    unmutated = [
        f"{target.module}:{line} {name}"
        for name, unit, line in found
        if (not target.functions or unit in target.functions)
        and (target.module, name) not in DECORATED_ALLOWED
    ]
    assert not unmutated, (
        "mutmut does not mutate decorated functions: keep the body undecorated and wrap it "
        "by assignment (docs/testing.md, 'Mutation testing'), or allow it in "
        f"DECORATED_ALLOWED with a reason: {unmutated}"
    )


def test_every_allowed_decorated_function_exists_and_has_a_reason():
    modules = {t.module for t in run.load_targets()}
    for (module, name), reason in DECORATED_ALLOWED.items():
        assert module in modules, f"{module}: not a target"
        names = {n for n, _, _ in decorated_functions((ROOT / module).read_text())}
        assert name in names, f"{module}: {name} is no longer decorated; drop it from the list"
        assert reason == PENDING or len(reason.split()) >= 5, (module, name)
