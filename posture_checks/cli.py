"""``devicetrust checks``: lint check files and try them against a fact document.

* ``devicetrust checks lint DIR...`` validates every check file (errors as
  ``file:line: message``, exit status 1 if any) and dry-runs each expression
  on a complete example fact document for each of its platforms, so type
  errors and unknown functions show up before a device ever meets them.
* ``devicetrust checks test DIR --facts FILE.json`` evaluates the directory's
  checks against one fact document (e.g. from ``devicetrust-agent facts``) and
  prints each result and why; ``--json`` for machines.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trust_protocol.cli_output import emit

if TYPE_CHECKING:  # the CEL and YAML modules load only when a command runs
    from posture_checks.model import Check, CheckIssue

MAX_FACTS_BYTES = 16 * 1024 * 1024


def dry_run(check: Check) -> tuple[list[CheckIssue], list[CheckIssue]]:
    """(errors, warnings) from evaluating ``check`` on example facts for each platform."""
    from posture_checks.evaluator import Status, evaluate, prepare_facts
    from posture_checks.model import CheckIssue
    from trust_protocol.facts_schema import example_document

    errors: list[CheckIssue] = []
    warnings: list[CheckIssue] = []
    now = dt.datetime.now(dt.UTC)
    for platform in check.platforms:
        result = evaluate(check, prepare_facts(example_document(platform), now), now=now)
        where = (check.source, check.expression_line)
        if result.status is Status.ERROR:
            errors.append(CheckIssue(*where, f"on example {platform} facts: {result.reason}"))
        elif result.status is Status.UNKNOWN:
            warnings.append(CheckIssue(*where, f"on example {platform} facts: {result.reason}"))
    return errors, warnings


def lint_directories(
    directories: list[Path],
) -> tuple[list[Check], list[CheckIssue], list[CheckIssue]]:
    """(valid checks, errors, warnings) for every check file in ``directories``."""
    from posture_checks.loader import load_directory

    checks: list[Check] = []
    errors: list[CheckIssue] = []
    warnings: list[CheckIssue] = []
    for directory in directories:
        found, issues = load_directory(directory)
        errors.extend(issues)
        for check in found:
            bad, doubtful = dry_run(check)
            errors.extend(bad)
            warnings.extend(doubtful)
            if not bad:
                checks.append(check)
    return checks, errors, warnings


@click.group("checks")
def checks() -> None:
    """Write, lint and try posture checks (YAML + CEL over device facts)."""


@checks.command("lint")
@click.argument(
    "directories", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False)
)
@click.option("--json", "as_json", is_flag=True, help="Print issues as JSON.")
def lint(directories: tuple[str, ...], as_json: bool) -> None:
    """Check every *.yaml/*.yml under DIRECTORIES; exit 1 on any error."""
    found, errors, warnings = lint_directories([Path(d) for d in directories])
    if not as_json:
        for issue in errors:
            click.echo(f"{issue}", err=True)
        for issue in warnings:
            click.echo(f"{issue} (warning)", err=True)
    emit(
        {
            "checks": [c.id for c in found],
            "errors": [vars(i) for i in errors],
            "warnings": [vars(i) for i in warnings],
        },
        as_json,
        f"{len(found)} checks ok, {len(errors)} errors, {len(warnings)} warnings",
    )
    sys.exit(1 if errors else 0)


def _read_facts(stream: Any) -> Any:
    raw = stream.read(MAX_FACTS_BYTES + 1)
    if len(raw) > MAX_FACTS_BYTES:
        raise click.BadParameter("larger than 16 MiB", param_hint="--facts")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--facts") from None


def _table(rows: list[tuple[str, str, str]]) -> str:
    width = shutil.get_terminal_size((120, 20)).columns
    first = max([len("CHECK"), *(len(r[0]) for r in rows)])
    second = max([len("RESULT"), *(len(r[1]) for r in rows)])
    room = max(20, width - first - second - 4)
    lines = [f"{'CHECK':<{first}}  {'RESULT':<{second}}  WHY"]
    for check_id, status, why in rows:
        why = why if len(why) <= room else why[: room - 1] + "…"
        lines.append(f"{check_id:<{first}}  {status:<{second}}  {why}")
    return "\n".join(lines)


@checks.command("test")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--facts", "facts_file", required=True, type=click.File("rb"), help="Fact JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--now", "now_text", help="Evaluate as of this ISO 8601 time (default: now).")
@click.option("--ignore-age", is_flag=True, help="Treat the facts as just collected.")
@click.option(
    "--vars", "vars_file", type=click.File("rb"), help='Overrides: {"check-id": {"name": value}}.'
)
@click.option("--remediation", is_flag=True, help="Also print remediation for failing checks.")
def test(
    directory: str,
    facts_file: Any,
    as_json: bool,
    now_text: str | None,
    ignore_age: bool,
    vars_file: Any,
    remediation: bool,
) -> None:
    """Evaluate DIRECTORY's checks against one fact document."""
    from posture_checks.evaluator import Status, evaluate_all, prepare_facts
    from posture_checks.loader import load_directory
    from posture_checks.remediation import render_remediation

    found, issues = load_directory(directory)
    for issue in issues:
        click.echo(str(issue), err=True)
    facts = _read_facts(facts_file)
    overrides = _read_facts(vars_file) if vars_file else {}
    if not isinstance(overrides, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--vars")
    try:
        now = dt.datetime.fromisoformat(now_text.replace("Z", "+00:00")) if now_text else None
    except ValueError:
        raise click.BadParameter("not an ISO 8601 time", param_hint="--now") from None
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    prepared = prepare_facts(facts, now if ignore_age else None)
    results = evaluate_all(found, prepared, now=now, variables=overrides)
    by_id = {c.id: c for c in found}
    payload: list[dict[str, Any]] = []
    parts: list[str] = []
    if as_json:
        payload = [r.to_dict() for r in results]
        if remediation:
            for item, result in zip(payload, results, strict=True):
                if result.status is not Status.PASS:
                    item["remediation"] = render_remediation(by_id[result.check_id], facts)
    else:
        parts.append(_table([(r.check_id, r.status.value, r.reason) for r in results]))
        if remediation:
            for result in results:
                if result.status in (Status.FAIL, Status.STALE, Status.UNKNOWN):
                    parts.append(f"\n## {result.check_id}\n")
                    parts.append(render_remediation(by_id[result.check_id], facts))
    emit({"results": payload, "issues": [vars(i) for i in issues]}, as_json, "\n".join(parts))
    sys.exit(1 if issues else 0)
