"""Posture checks (read-only: they live in check files) and exemptions from them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import MAX_ID, Call
from idp_service.api.core import operation as op
from idp_service.platform.errors import NotFound
from idp_service.platform.models import utcnow
from idp_service.posture import queries as posture_queries
from idp_service.posture import service as posture_service
from idp_service.web.context import ctx

CHECK = S.obj(
    {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "platforms": S.array({"type": "string"}),
        "severity": {"type": "string"},
        "enforcement": S.obj(
            {"mode": {"type": "string"}, "deadline_days": {"type": ["integer", "null"]}},
            ("mode", "deadline_days"),
        ),
        "max_fact_age_seconds": {"type": "number"},
        "fail_closed": {"type": "boolean"},
        "results": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "How many devices have each status now",
        },
    },
    (
        "id",
        "title",
        "description",
        "platforms",
        "severity",
        "enforcement",
        "max_fact_age_seconds",
        "fail_closed",
        "results",
    ),
)
EXEMPTION = S.obj(
    {
        "id": {"type": "integer"},
        "check_id": {"type": "string"},
        "scope": {"enum": ["device", "user", "group"]},
        "subject": {"type": "string"},
        "reason": {"type": "string"},
        "expires_at": S.TIMESTAMP,
        "created_by": {"type": ["string", "null"]},
        "created_at": S.TIMESTAMP,
    },
    ("id", "check_id", "scope", "subject", "reason", "expires_at", "created_at"),
)


def _checks_json(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "title": c.title,
            "description": c.description,
            "platforms": list(c.platforms),
            "severity": c.severity,
            "enforcement": {
                "mode": c.enforcement.mode,
                "deadline_days": c.enforcement.deadline_days,
            },
            "max_fact_age_seconds": c.max_fact_age.total_seconds(),
            "fail_closed": bool(c.fail_closed),
            "results": counts.get(c.id, {}),
        }
        for c in ctx().posture.checks()
    ]


def _result_counts(call: Call) -> dict[str, dict[str, int]]:
    with call.db.session() as s:
        return posture_queries.check_status_counts(s)


@op(
    "GET",
    "/checks",
    summary="The posture checks in force, with how many devices pass or fail each",
    tag="posture",
    response=S.obj({"items": S.array(CHECK)}, ("items",)),
)
def list_checks(call: Call) -> dict[str, Any]:
    return {"items": _checks_json(_result_counts(call))}


@op(
    "GET",
    "/checks/{check_id}",
    summary="One posture check",
    tag="posture",
    path_params={"check_id": S.string(128, min_length=1)},
    response=CHECK,
)
def get_check(call: Call) -> dict[str, Any]:
    for check in _checks_json(_result_counts(call)):
        if check["id"] == call.path["check_id"]:
            return check
    raise NotFound("check_not_found", f"no check {call.path['check_id']!r}")


@op(
    "GET",
    "/exemptions",
    summary="Exemptions (active ones unless all=true), soonest expiry first",
    tag="posture",
    query={"all": {"type": "boolean"}},
    response=S.obj({"items": S.array(EXEMPTION)}, ("items",)),
)
def list_exemptions(call: Call) -> dict[str, Any]:
    active_only = not call.query.get("all")
    with call.db.session() as s:
        rows = posture_queries.exemptions(s, active_only=active_only)
        return {"items": [posture_service.exemption_json(r) for r in rows]}


@op(
    "POST",
    "/exemptions",
    summary="Exempt a device, user or group from a check (or '*') for some days",
    tag="posture",
    body=S.obj(
        {
            "check_id": S.string(128, min_length=1),
            "scope": {"type": "string", "enum": ["device", "user", "group"]},
            "subject": S.string(256, min_length=1),
            "days": {"type": "integer", "minimum": 1, "maximum": 365},
            "reason": S.REASON,
        },
        ("check_id", "scope", "subject", "days", "reason"),
    ),
    response=EXEMPTION,
    status=201,
)
def add_exemption(call: Call) -> dict[str, Any]:
    body = call.body
    with call.db.session() as s:
        row = posture_service.add_exemption(
            s,
            check_id=body["check_id"],
            scope=body["scope"],
            subject=body["subject"],
            expires_at=utcnow() + dt.timedelta(days=body["days"]),
            reason=body["reason"],
            actor=call.actor,
        )
        return posture_service.exemption_json(row)


@op(
    "DELETE",
    "/exemptions/{exemption_id}",
    summary="End an exemption now (with a reason)",
    tag="posture",
    path_params={"exemption_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID}},
    body=S.obj({"reason": S.REASON}, ("reason",)),
    response=S.obj({"removed": {"type": "integer"}}, ("removed",)),
)
def remove_exemption(call: Call) -> dict[str, Any]:
    exemption_id = call.path["exemption_id"]
    with call.db.session() as s:
        posture_service.end_exemption(s, exemption_id, reason=call.body["reason"], actor=call.actor)
    return {"removed": exemption_id}
