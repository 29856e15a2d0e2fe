"""Evaluate checks over a fact document: PASS, FAIL, UNKNOWN, INAPPLICABLE, ERROR or STALE.

Order of decisions for each check:

1. the device's platform (``os.family``) is not in the check's platforms -> INAPPLICABLE
   (no platform at all -> UNKNOWN);
2. the facts are older than the check's ``max_fact_age`` (or their age is not
   known) -> STALE: an old PASS is not evidence of anything;
3. the expression is evaluated: ``true`` -> PASS, ``false`` -> FAIL;
   a fact it needs is missing or null -> UNKNOWN; a value of the wrong type, a
   failing function or a result that is not a bool -> ERROR, with a message.

Fact documents come from devices and are untrusted: :func:`prepare_facts`
bounds their depth and size, drops nulls (so ``has()`` and missing-key
semantics treat null as absent) and repairs strings CEL cannot hold. Nothing
here raises on any input; every outcome is a :class:`CheckResult`.
Expressions were compiled once when the check was loaded.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from posture_checks.functions import functions
from posture_checks.model import Check

MAX_DEPTH = 24
MAX_ITEMS = 20000
MAX_STRING = 8192
_INT64 = 2**63


class Status(enum.StrEnum):
    """A check's result."""

    PASS = "PASS"  # noqa: S105 - a result name, not a password
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"
    INAPPLICABLE = "INAPPLICABLE"
    ERROR = "ERROR"
    STALE = "STALE"

    @property
    def css(self) -> str:
        """The lowercase name the console styles (``.pill.fail``)."""
        return self.value.lower()


FAILING = frozenset({Status.FAIL, Status.STALE})
"""Statuses that count as failing whatever the check's ``fail_closed`` says."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome for one fact document, with the reason why."""

    check_id: str
    status: Status
    reason: str
    evaluated_at: dt.datetime
    fact_age_seconds: int | None = None
    facts_used: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for storage and ``checks test --json``)."""
        return {
            "check_id": self.check_id,
            "status": self.status.value,
            "reason": self.reason,
            "evaluated_at": self.evaluated_at.isoformat(),
            "fact_age_seconds": self.fact_age_seconds,
            "facts_used": dict(self.facts_used),
        }


def _clean(value: Any, depth: int, budget: list[int]) -> Any:
    """A JSON-shaped copy CEL can hold; None where the value cannot be kept."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value[:MAX_STRING]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
        return text
    if isinstance(value, (list, tuple)):
        items = [_clean(v, depth + 1, budget) for v in list(value)[:MAX_ITEMS]]
        return [v for v in items if v is not None]
    if isinstance(value, dict) and len(value) > 16:
        # Fast path for big flat maps of short strings (packages.installed).
        items = list(value.items())[:MAX_ITEMS]
        if all(
            type(k) is str and type(v) is str and len(k) <= MAX_STRING and len(v) <= MAX_STRING
            for k, v in items
        ):
            try:
                for k, v in items:
                    (k + v).encode("utf-8")
            except UnicodeEncodeError:
                pass
            else:
                budget[0] -= len(items)
                return dict(items) if budget[0] >= 0 else None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:MAX_ITEMS]:
            if not isinstance(key, str):
                continue
            cleaned = _clean(item, depth + 1, budget)
            if cleaned is not None:
                out[_clean(key, depth + 1, [1])] = cleaned
        return out
    return None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class PreparedFacts:
    """A fact document made safe for CEL once, then shared by every check."""

    def __init__(
        self,
        document: Any,
        observed_at: dt.datetime | None = None,
        roots: Iterable[str] | None = None,
    ) -> None:
        if isinstance(document, Mapping) and roots is not None:
            # Only the sections some check will read (plus what every evaluation needs).
            wanted = {*roots, "os", "collected_at"}
            document = {k: v for k, v in document.items() if k in wanted}
        cleaned = _clean(document, 0, [MAX_ITEMS * 10]) if isinstance(document, Mapping) else None
        self.document: dict[str, Any] = cleaned if isinstance(cleaned, dict) else {}
        self.valid = isinstance(cleaned, dict)
        os_section = self.document.get("os")
        family = os_section.get("family") if isinstance(os_section, dict) else None
        self.platform: str | None = family if isinstance(family, str) else None
        self.observed_at = observed_at or _parse_time(self.document.get("collected_at"))
        self._context: Any = None
        self._context_roots: frozenset[str] = frozenset()
        self._context_error: str | None = None
        self._vars: dict[str, Any] = {}

    def context(self, roots: Iterable[str] | None = None) -> Any:
        """A CEL context holding the fact sections ``roots`` (all if None), built once.

        Converting facts into CEL values is the expensive part of evaluation, so
        it happens once per document, for the sections the checks read. Check
        variables are not added to the context (that would re-convert every
        fact): they are served by a resolver from :meth:`use_vars`.
        """
        wanted = frozenset(self.document) - {"vars"} if roots is None else frozenset(roots)
        wanted &= frozenset(self.document)
        if self._context is not None and wanted <= self._context_roots:
            return self._context
        if self._context_error is not None and wanted <= self._context_roots:
            return None
        wanted |= self._context_roots
        self._context_roots = wanted
        try:
            context = cel.Context({k: self.document[k] for k in wanted}, functions=functions())
            context.set_variable_resolver(lambda name: self._vars if name == "vars" else None)
        except Exception as exc:
            self._context, self._context_error = None, str(exc)[:200]
            return None
        self._context, self._context_error = context, None
        return context

    def use_vars(self, variables: dict[str, Any]) -> None:
        """The check variables the next evaluation sees as ``vars``."""
        self._vars = variables

    def lookup(self, path: str) -> Any:
        """The value at a dotted path, or None."""
        value: Any = self.document
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


def prepare_facts(
    document: Any,
    observed_at: dt.datetime | None = None,
    *,
    roots: Iterable[str] | None = None,
) -> PreparedFacts:
    """Make a (possibly hostile) fact document ready for evaluation.

    With ``roots``, only those sections are copied and cleaned (the checks to
    be evaluated read nothing else); by default the whole document is.
    """
    return PreparedFacts(document, observed_at, roots)


class _Summary(str):
    """A container shown by its size ("[3 items]") rather than its contents."""

    __slots__ = ()


def _describe(value: Any) -> Any:
    if isinstance(value, list):
        return _Summary(f"[{len(value)} items]")
    if isinstance(value, dict):
        return _Summary(f"{{{len(value)} keys}}")
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    return value


def _facts_used(check: Check, facts: PreparedFacts) -> dict[str, Any]:
    return {path: _describe(facts.lookup(path)) for path in check.paths}


def _why(used: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{path} = {value if isinstance(value, _Summary) else json.dumps(value)}"
        for path, value in used.items()
    )


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0][:200]


def _classify_error(exc: BaseException, check: Check, facts: PreparedFacts) -> tuple[Status, str]:
    text = str(exc)
    if isinstance(exc, KeyError):
        key = str(exc.args[0] if exc.args else "?")[:80]
        # Name the whole path when the key is the end of one the expression reads.
        absent = [p for p in check.paths if facts.lookup(p) is None]
        full = next((p for p in absent if p == key or p.endswith("." + key)), key)
        return Status.UNKNOWN, f"missing fact: {full}"
    match = re.search(r"Undefined variable or function: '([^']+)'", text)
    if match:
        name = match.group(1)
        try:
            variables = check.program.variables()
        except Exception:
            variables = []
        if name in variables:
            return Status.UNKNOWN, f"missing fact: {name}"
        return Status.ERROR, f"unknown function {name}()"
    if isinstance(exc, TypeError):
        return Status.ERROR, f"wrong type: {_first_sentence(text)}"
    if isinstance(exc, ZeroDivisionError):
        return Status.ERROR, "division by zero"
    if isinstance(exc, IndexError):
        return Status.ERROR, f"index out of range: {_first_sentence(text)}"
    function = re.search(r"Function '([^']+)' error: (.*)", text)
    if function:
        return Status.ERROR, f"{function.group(1)}(): {_first_sentence(function.group(2))}"
    return Status.ERROR, f"{exc.__class__.__name__}: {_first_sentence(text)}"


def evaluate(
    check: Check,
    facts: PreparedFacts | Mapping[str, Any],
    *,
    now: dt.datetime,
    variables: Mapping[str, Any] | None = None,
) -> CheckResult:
    """One check against one fact document. Never raises."""
    prepared = facts if isinstance(facts, PreparedFacts) else prepare_facts(facts)

    def result(status: Status, reason: str, used: Mapping[str, Any] | None = None) -> CheckResult:
        return CheckResult(check.id, status, reason, now, age, used or {})

    age = None
    if prepared.observed_at is not None:
        age = int((now - prepared.observed_at).total_seconds())
    if not prepared.valid:
        return result(Status.UNKNOWN, "no fact document")
    if prepared.platform is None:
        return result(Status.UNKNOWN, "missing fact: os.family")
    if prepared.platform not in check.platforms:
        return result(
            Status.INAPPLICABLE, f"{prepared.platform} is not in {', '.join(check.platforms)}"
        )
    if age is None:
        return result(Status.STALE, "the facts have no collection time")
    max_age = int(check.max_fact_age.total_seconds())
    if age > max_age:
        return result(Status.STALE, f"facts are {age}s old; this check accepts {max_age}s")
    if check.program is None:
        return result(Status.ERROR, "expression did not compile")
    context = prepared.context(check.roots)
    if context is None:
        return result(Status.ERROR, f"facts cannot be evaluated: {prepared._context_error}")
    merged = dict(check.variables)
    if variables:
        merged.update(variables)
    try:
        prepared.use_vars(_clean(merged, 0, [MAX_ITEMS * 10]) or {})
        value = check.program.execute(context)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # CEL raises several types; a Rust panic is a BaseException
        status, reason = _classify_error(exc, check, prepared)
        return result(status, reason, _facts_used(check, prepared))
    used = {k: v for k, v in _facts_used(check, prepared).items() if v is not None}
    if value is True:
        return result(Status.PASS, _why(used) or "expression is true", used)
    if value is False:
        return result(Status.FAIL, _why(used) or "expression is false", used)
    return result(
        Status.ERROR, f"expression returned {type(value).__name__}, not true or false", used
    )


def evaluate_all(
    checks: Iterable[Check],
    facts: Any,
    *,
    now: dt.datetime,
    observed_at: dt.datetime | None = None,
    variables: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[CheckResult]:
    """Every check against one fact document; ``variables`` overrides per check id.

    ``observed_at`` is when the facts were collected as the server knows it
    (e.g. the report's receive time); by default the document's own
    ``collected_at`` is used.
    """
    prepared = facts if isinstance(facts, PreparedFacts) else prepare_facts(facts, observed_at)
    overrides = variables or {}
    checks = list(checks)
    prepared.context({root for c in checks for root in c.roots})  # convert facts once
    return [evaluate(c, prepared, now=now, variables=overrides.get(c.id)) for c in checks]
