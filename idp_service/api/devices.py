"""Devices: list and search, one device in detail, pending approvals, and admin actions.

Every action takes a reason and is audited by :mod:`idp_service.devices.registry`; it
takes effect at the device's next sign-in. Detection's flags
(:mod:`idp_service.devices.detection`) are shown with a device and resolved by approving,
denying or revoking it, or, for a device the policy left alone, by marking them reviewed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from idp_service.admin import queries
from idp_service.api import schema as S
from idp_service.api.core import ID, PAGING, Call, decode_cursor, encode_cursor, like, limit_of
from idp_service.api.core import operation as op
from idp_service.devices import approve, detection, flags, registry, states
from idp_service.devices import queries as device_queries
from idp_service.platform.errors import Invalid
from idp_service.platform.models import DEVICE_STATES, AuditEvent
from idp_service.upstream import reauth
from posture_checks.evaluator import Status

NULLABLE = S.string(4096, nullable=True)
APPROVAL_REQUEST = {
    **S.obj(
        {
            "id": {"type": "string"},
            "status": {"enum": list(approve.REQUEST_STATUSES)},
            "attempts": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "created_at": S.TIMESTAMP,
            "expires_at": S.TIMESTAMP,
            "closed_at": S.TIMESTAMP_OR_NULL,
        },
        ("id", "status", "attempts", "max_attempts", "created_at", "expires_at", "closed_at"),
    ),
    "type": ["object", "null"],
    "description": "The device's newest trusted-device approval request (a code from one of "
    "its owner's trusted devices approves it), or null. status: open; expired (the current "
    "code expired, the user can ask for a new one); approved; exhausted (too many wrong "
    "codes); closed (an admin or the system decided). Codes are never shown. In lists and "
    "the device detail.",
}
DEVICE = S.obj(
    {
        "id": {"type": "string"},
        "state": {"enum": list(DEVICE_STATES)},
        "state_reason": {"type": ["string", "null"]},
        "user": {"type": "string"},
        "user_id": {"type": "string"},
        "hostname": {"type": ["string", "null"]},
        "platform": {"type": ["string", "null"]},
        "hardware_uuid": {"type": ["string", "null"]},
        "serial": {"type": ["string", "null"]},
        "agent_version": {"type": ["string", "null"]},
        "sign_key_fingerprint": {"type": "string"},
        "first_seen": S.TIMESTAMP,
        "last_seen": S.TIMESTAMP,
        "last_clock_skew": {"type": ["number", "null"]},
        "approval_request": APPROVAL_REQUEST,
    },
    (
        "id",
        "state",
        "user",
        "user_id",
        "sign_key_fingerprint",
        "first_seen",
        "last_seen",
    ),
)
CHECK_RESULT = S.obj(
    {
        "check_id": {"type": "string"},
        "status": {"enum": [s.value for s in Status]},
        "reason": {"type": ["string", "null"]},
        "evaluated_at": S.TIMESTAMP,
        "first_failed_at": S.TIMESTAMP_OR_NULL,
    },
    ("check_id", "status", "evaluated_at"),
)
CHECK_CHANGE = S.obj(
    {
        "check_id": {"type": "string"},
        "status": {"enum": [s.value for s in Status]},
        "reason": {"type": ["string", "null"]},
        "at": S.TIMESTAMP,
    },
    ("check_id", "status", "at"),
)
AUDIT_EVENT = S.obj(
    {
        "id": {"type": "integer"},
        "at": S.TIMESTAMP,
        "action": {"type": "string"},
        "outcome": {"type": "string"},
        "code": {"type": ["string", "null"]},
        "actor": {"type": ["string", "null"]},
        "user_id": {"type": ["string", "null"]},
        "device_id": {"type": ["string", "null"]},
        "remote_addr": {"type": ["string", "null"]},
        "details": {"type": ["object", "null"]},
    },
    ("id", "at", "action", "outcome"),
)
FLAG = S.obj(
    {
        "id": {"type": "integer"},
        "kind": {"enum": list(flags.FLAG_KINDS)},
        "evidence": {"type": "object"},
        "created_at": S.TIMESTAMP,
        "resolved_at": S.TIMESTAMP_OR_NULL,
        "resolved_by": {"type": ["string", "null"]},
        "resolution": {"type": ["string", "null"]},
    },
    ("id", "kind", "evidence", "created_at", "resolved_at", "resolved_by", "resolution"),
)
DEVICE_DETAIL = S.obj(
    {
        "device": DEVICE,
        "flags": S.array(FLAG),
        "facts": {
            "type": ["object", "null"],
            "description": "The latest fact document, with report_seq and received_at",
        },
        "checks": S.array(CHECK_RESULT),
        "check_history": S.array(CHECK_CHANGE),
        "audit": S.array(AUDIT_EVENT),
    },
    ("device", "flags", "facts", "checks", "check_history", "audit"),
)
REASON_BODY = S.obj({"reason": S.REASON}, ("reason",))
DEVICE_PATH = {"device_id": ID}
FILTERS = {
    "q": S.string(256),
    "state": {"type": "string", "enum": list(DEVICE_STATES)},
    "flagged": {"type": "boolean", "description": "Only devices with open flags (for review)"},
    "platform": S.string(32),
    "user": S.string(256),
    **PAGING,
}


def audit_json(row: AuditEvent) -> dict[str, Any]:
    """An audit event as the API shows it."""
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "action": row.action,
        "outcome": row.outcome,
        "code": row.code,
        "actor": row.actor,
        "user_id": row.user_id,
        "device_id": row.device_id,
        "remote_addr": row.remote_addr,
        "details": row.details,
    }


def _with_request(data: dict[str, Any], req: Any) -> dict[str, Any]:
    data["approval_request"] = approve.request_json(req) if req is not None else None
    return data


def device_page(call: Call, query: dict[str, Any], limit: int) -> dict[str, Any]:
    """A page of devices, newest first, filtered as ``query`` says."""
    after = None
    if query.get("cursor"):
        at_text, last_id = decode_cursor(query["cursor"], (str, str))
        try:
            at = dt.datetime.fromisoformat(at_text).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise Invalid("bad_cursor", "cursor is not one this API gave out") from None
        after = (at, last_id)
    with call.db.session() as s:
        rows = device_queries.page(
            s,
            limit=limit,
            state=query.get("state"),
            flagged=bool(query.get("flagged")),
            review=bool(query.get("review")),
            platform=query.get("platform"),
            user=query.get("user"),
            pattern=like(query["q"]) if query.get("q") else None,
            after=after,
        )
        requests = approve.latest_requests(s, [d.id for d, _ in rows[:limit]])
        items = [
            _with_request(device_queries.device_json(d, u), requests.get(d.id))
            for d, u in rows[:limit]
        ]
    more = len(rows) > limit
    last = rows[limit - 1][0] if more else None
    return {
        "items": items,
        "next_cursor": encode_cursor([last.first_seen.isoformat(), last.id]) if last else None,
    }


@op(
    "GET",
    "/devices",
    summary="List devices (search q, filters, newest first, paged)",
    tag="devices",
    query=FILTERS,
    response=S.page(DEVICE),
)
def list_devices(call: Call) -> dict[str, Any]:
    return device_page(call, call.query, limit_of(call))


@op(
    "GET",
    "/approvals",
    summary="Devices waiting for an admin's approval",
    tag="devices",
    query=PAGING,
    response=S.page(DEVICE),
)
def list_approvals(call: Call) -> dict[str, Any]:
    return device_page(call, {**call.query, "state": "pending"}, limit_of(call))


@op(
    "GET",
    "/review",
    summary="Devices that need review: suspended, or with open flags (clone, duplicate, stale)",
    tag="devices",
    query=PAGING,
    response=S.page(DEVICE),
)
def list_review(call: Call) -> dict[str, Any]:
    return device_page(call, {**call.query, "review": True}, limit_of(call))


@op(
    "GET",
    "/devices/{device_id}/flags",
    summary="A device's clone, duplicate and staleness flags with their evidence, newest first",
    tag="devices",
    path_params=DEVICE_PATH,
    response=S.obj({"items": S.array(FLAG)}, ("items",)),
)
def list_flags(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        device_queries.require(s, call.path["device_id"])
        return {"items": flags.flags_json(s, call.path["device_id"])}


@op(
    "POST",
    "/devices/{device_id}/flags/resolve",
    summary="Mark a device's open flags reviewed without changing its state (policy flag); "
    "a suspended device is approved, denied or revoked instead",
    tag="devices",
    path_params=DEVICE_PATH,
    body=REASON_BODY,
    response=S.obj({"resolved": S.array({"type": "integer"})}, ("resolved",)),
    errors=(409,),
)
def resolve_flags(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        ids = detection.mark_reviewed(
            s, call.path["device_id"], reason=call.body["reason"], actor=call.actor
        )
    return {"resolved": ids}


@op(
    "GET",
    "/devices/{device_id}",
    summary="One device with its facts, check results and history, and audit trail",
    tag="devices",
    path_params=DEVICE_PATH,
    response=DEVICE_DETAIL,
)
def get_device(call: Call) -> dict[str, Any]:
    device_id = call.path["device_id"]
    with call.db.session() as s:
        device = device_queries.require(s, device_id)
        facts_row = device_queries.facts(s, device_id)
        facts = None
        if facts_row is not None:
            facts = {
                "report_seq": facts_row.report_seq,
                "schema_version": facts_row.schema_version,
                "collected_at": facts_row.collected_at.isoformat()
                if facts_row.collected_at
                else None,
                "received_at": facts_row.received_at.isoformat(),
                "facts": facts_row.facts,
            }
        checks = device_queries.check_results(s, device_id)
        history = device_queries.check_history(s, device_id, limit=100)
        events, _ = queries.audit_page(s, queries.AuditFilter(device_id=device_id), limit=100)
        return {
            "device": _with_request(
                device_queries.json_of(s, device),
                approve.latest_requests(s, [device_id]).get(device_id),
            ),
            "flags": flags.flags_json(s, device_id),
            "facts": facts,
            "checks": [
                {
                    "check_id": r.check_id,
                    "status": r.status,
                    "reason": r.reason,
                    "evaluated_at": r.evaluated_at.isoformat(),
                    "first_failed_at": r.first_failed_at.isoformat() if r.first_failed_at else None,
                }
                for r in checks
            ],
            "check_history": [
                {
                    "check_id": h.check_id,
                    "status": h.status,
                    "reason": h.reason,
                    "at": h.at.isoformat(),
                }
                for h in history
            ],
            "audit": [audit_json(e) for e in events],
        }


def _action(action: str) -> None:
    def handler(call: Call) -> dict[str, Any]:
        with call.db.session() as s:
            device = registry.change_state(
                s, call.path["device_id"], action, reason=call.body["reason"], actor=call.actor
            )
            return device_queries.json_of(s, device)

    handler.__name__ = f"{action}_device"
    op(
        "POST",
        f"/devices/{{device_id}}/{action}",
        summary=f"{action.capitalize()} a device (with a reason; effective at the next sign-in)",
        tag="devices",
        path_params=DEVICE_PATH,
        body=REASON_BODY,
        response=DEVICE,
        errors=(409,),
    )(handler)


for _name in states.ADMIN_ACTIONS:
    _action(_name)


@op(
    "POST",
    "/devices/{device_id}/owner",
    summary="Give a device to another user",
    tag="devices",
    path_params=DEVICE_PATH,
    body=S.obj({"user_id": ID, "reason": S.REASON}, ("user_id", "reason")),
    response=DEVICE,
    errors=(409,),
)
def change_owner(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        device = registry.change_owner(
            s,
            call.path["device_id"],
            call.body["user_id"],
            reason=call.body["reason"],
            actor=call.actor,
        )
        return device_queries.json_of(s, device)


REVERIFIED = S.obj(
    {"devices": S.array(ID), "tokens_revoked": {"type": "integer"}},
    ("devices", "tokens_revoked"),
)


@op(
    "POST",
    "/devices/{device_id}/reverify",
    summary="Re-verify a device: revoke its re-authentication tokens and require an upstream "
    "sign-in at its next sign-in",
    tag="devices",
    path_params=DEVICE_PATH,
    body=REASON_BODY,
    response=REVERIFIED,
)
def reverify_device(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        target = reauth.reverify_target(s, user=None, device=call.path["device_id"])
        return reauth.reverify(
            s,
            device_ids=target["device_ids"],
            user_id=target["user_id"],
            actor=call.actor,
            reason=call.body["reason"],
        )


@op(
    "POST",
    "/users/{user_id}/reverify",
    summary="Re-verify every device of a user (revoke their re-authentication tokens; each "
    "needs an upstream sign-in next)",
    tag="devices",
    path_params={"user_id": ID},
    body=REASON_BODY,
    response=REVERIFIED,
)
def reverify_user(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        target = reauth.reverify_target(s, user=call.path["user_id"], device=None)
        return reauth.reverify(
            s,
            device_ids=target["device_ids"],
            user_id=target["user_id"],
            actor=call.actor,
            reason=call.body["reason"],
        )


@op(
    "DELETE",
    "/devices/{device_id}",
    summary="Delete a device and its posture data (its next sign-in is refused)",
    tag="devices",
    path_params=DEVICE_PATH,
    body=REASON_BODY,
    response=S.obj({"deleted": DEVICE}, ("deleted",)),
)
def delete_device(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        data = registry.delete_device(
            s, call.path["device_id"], reason=call.body["reason"], actor=call.actor
        )
    return {"deleted": data}


@op(
    "GET",
    "/overview",
    summary="Counts by device state, pending approvals and failing checks",
    tag="overview",
    response=S.obj(
        {
            "devices": S.obj({k: {"type": "integer"} for k in DEVICE_STATES}, DEVICE_STATES),
            "pending_approvals": {"type": "integer"},
            "needs_review": {
                "type": "integer",
                "description": "Devices suspended or with open flags",
            },
            "failing_checks": S.array(
                S.obj(
                    {"check_id": {"type": "string"}, "devices": {"type": "integer"}},
                    ("check_id", "devices"),
                )
            ),
        },
        ("devices", "pending_approvals", "needs_review", "failing_checks"),
    ),
)
def overview(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        counts = device_queries.state_counts(s)
        failing_rows = queries.failing_checks(s, limit=None)
        review = device_queries.review_count(s)
    devices = {state: counts.get(state, 0) for state in DEVICE_STATES}
    return {
        "devices": devices,
        "pending_approvals": devices["pending"],
        "needs_review": review,
        "failing_checks": [{"check_id": c, "devices": n} for c, n in failing_rows],
    }
