"""The audit log, newest first, paged by event id, with filters."""

from __future__ import annotations

from typing import Any

from idp_service.admin import queries
from idp_service.api import schema as S
from idp_service.api.core import PAGING, Call, decode_cursor, encode_cursor, limit_of
from idp_service.api.core import operation as op
from idp_service.api.devices import AUDIT_EVENT, audit_json


@op(
    "GET",
    "/audit",
    summary="Audit events, newest first, paged by id; filter by action, outcome, actor, "
    "user or device",
    tag="audit",
    query={
        "action": S.string(64),
        "outcome": S.string(16),
        "actor": S.string(256),
        "user_id": S.string(64),
        "device_id": S.string(64),
        **PAGING,
    },
    response=S.page(AUDIT_EVENT),
)
def list_audit(call: Call) -> dict[str, Any]:
    limit = limit_of(call)
    before = None
    if call.query.get("cursor"):
        (before,) = decode_cursor(call.query["cursor"], (int,))
    filters = {
        name: call.query[name]
        for name in ("action", "outcome", "actor", "user_id", "device_id")
        if call.query.get(name)
    }
    with call.db.session() as s:
        rows = queries.audit_events(s, limit=limit, before=before, **filters)
    last = rows[limit - 1] if len(rows) > limit else None
    return {
        "items": [audit_json(e) for e in rows[:limit]],
        "next_cursor": encode_cursor([last.id]) if last else None,
    }
