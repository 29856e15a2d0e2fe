"""Webhook endpoints and their delivery log: list, add, change, remove, rotate, test, redeliver.

The secret of an endpoint is in the answer of ``POST /webhooks`` and of
``POST /webhooks/{webhook_id}/rotate`` only. See docs/events.md.
"""

from __future__ import annotations

from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import MAX_ID, PAGING, Call, decode_cursor, encode_cursor, limit_of
from idp_service.api.core import operation as op
from idp_service.webhooks import catalog, endpoints
from idp_service.webhooks.service import DELIVERY_STATUSES, check_status

URL = {
    **S.string(endpoints.MAX_URL, min_length=1),
    "format": "uri",
    "description": "An absolute http or https URL, without credentials or a fragment (400 bad_url)",
}
EVENT_TYPES = {
    "type": ["array", "null"],
    "items": {"enum": list(catalog.ALL_TYPES)},
    "maxItems": len(catalog.ALL_TYPES),
    "description": "Event types this endpoint receives; null for every type",
}
ENDPOINT = S.obj(
    {
        "id": {"type": "integer"},
        "url": {"type": "string"},
        "description": {"type": "string"},
        "event_types": {"type": ["array", "null"], "items": {"type": "string"}},
        "active": {"type": "boolean"},
        "created_at": S.TIMESTAMP,
        "created_by": {"type": ["string", "null"]},
        "updated_at": S.TIMESTAMP,
    },
    ("id", "url", "description", "event_types", "active", "created_at", "updated_at"),
)
WITH_SECRET = S.obj(
    {
        "endpoint": ENDPOINT,
        "secret": {
            "type": "string",
            "description": "whsec_... signing secret: shown this once; keep it on the receiver",
        },
    },
    ("endpoint", "secret"),
)
DELIVERY = S.obj(
    {
        "id": {"type": "integer"},
        "endpoint_id": {"type": "integer"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "payload": {"type": "object"},
        "status": {"enum": list(DELIVERY_STATUSES)},
        "attempts": {"type": "integer"},
        "next_attempt_at": S.TIMESTAMP_OR_NULL,
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "last_attempt_at": S.TIMESTAMP_OR_NULL,
        "created_at": S.TIMESTAMP,
        "delivered_at": S.TIMESTAMP_OR_NULL,
    },
    ("id", "endpoint_id", "event_id", "event_type", "payload", "status", "attempts", "created_at"),
)
INT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
WEBHOOK_PATH = {"webhook_id": INT_ID}


@op(
    "GET",
    "/webhooks",
    summary="Webhook endpoints (never their secrets)",
    tag="webhooks",
    response=S.obj({"items": S.array(ENDPOINT)}, ("items",)),
)
def list_webhooks(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return {"items": [endpoints.endpoint_json(e) for e in endpoints.list_endpoints(s)]}


@op(
    "POST",
    "/webhooks",
    summary="Add a webhook endpoint; the answer carries its signing secret, shown once",
    tag="webhooks",
    body=S.obj(
        {
            "url": URL,
            "description": S.string(endpoints.MAX_DESCRIPTION),
            "event_types": EVENT_TYPES,
            "active": {"type": "boolean"},
        },
        ("url",),
    ),
    response=WITH_SECRET,
    status=201,
)
def create_webhook(call: Call) -> dict[str, Any]:
    body = call.body
    with call.db.session() as s:
        row, secret = endpoints.create(
            s,
            body["url"],
            actor=call.actor,
            description=body.get("description", ""),
            event_types=body.get("event_types"),
            active=body.get("active", True),
        )
        return {"endpoint": endpoints.endpoint_json(row), "secret": secret}


@op(
    "GET",
    "/webhooks/{webhook_id}",
    summary="One webhook endpoint",
    tag="webhooks",
    path_params=WEBHOOK_PATH,
    response=ENDPOINT,
)
def get_webhook(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return endpoints.endpoint_json(endpoints.get(s, call.path["webhook_id"]))


@op(
    "PATCH",
    "/webhooks/{webhook_id}",
    summary="Change an endpoint's URL, description, event types, or enable/disable it",
    tag="webhooks",
    path_params=WEBHOOK_PATH,
    body=S.obj(
        {
            "url": URL,
            "description": S.string(endpoints.MAX_DESCRIPTION),
            "event_types": EVENT_TYPES,
            "active": {"type": "boolean"},
        }
    ),
    response=ENDPOINT,
)
def update_webhook(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        row = endpoints.update(s, call.path["webhook_id"], call.body, actor=call.actor)
        return endpoints.endpoint_json(row)


@op(
    "DELETE",
    "/webhooks/{webhook_id}",
    summary="Remove an endpoint and its delivery log",
    tag="webhooks",
    path_params=WEBHOOK_PATH,
    response=S.obj({"deleted": ENDPOINT}, ("deleted",)),
)
def delete_webhook(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return {"deleted": endpoints.remove(s, call.path["webhook_id"], actor=call.actor)}


@op(
    "POST",
    "/webhooks/{webhook_id}/rotate",
    summary="Give an endpoint a new signing secret at once (shown once in the answer)",
    tag="webhooks",
    path_params=WEBHOOK_PATH,
    response=WITH_SECRET,
)
def rotate_webhook_secret(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        row, secret = endpoints.rotate(s, call.path["webhook_id"], actor=call.actor)
        return {"endpoint": endpoints.endpoint_json(row), "secret": secret}


@op(
    "POST",
    "/webhooks/{webhook_id}/test",
    summary="Queue a webhook.test event for this endpoint",
    tag="webhooks",
    path_params=WEBHOOK_PATH,
    response=DELIVERY,
    status=202,
    errors=(409,),
)
def test_webhook(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return endpoints.delivery_json(
            endpoints.send_test(s, call.path["webhook_id"], actor=call.actor)
        )


@op(
    "GET",
    "/webhook-deliveries",
    summary="The delivery log, newest first, paged; filter by endpoint, status, type or event",
    tag="webhooks",
    query={
        "webhook_id": INT_ID,
        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "event_type": S.string(64),
        "event_id": S.string(64),
        **PAGING,
    },
    response=S.page(DELIVERY),
)
def list_webhook_deliveries(call: Call) -> dict[str, Any]:
    q = call.query
    flt = endpoints.DeliveryFilter(
        endpoint_id=q.get("webhook_id"),
        status=check_status(q.get("status")),
        event_type=q.get("event_type") or None,
        event_id=q.get("event_id") or None,
    )
    before = decode_cursor(q["cursor"], (int,))[0] if q.get("cursor") else None
    with call.db.session() as s:
        rows, more = endpoints.delivery_page(s, flt, before=before, limit=limit_of(call))
        return {
            "items": [endpoints.delivery_json(r) for r in rows],
            "next_cursor": encode_cursor([more]) if more else None,
        }


@op(
    "POST",
    "/webhook-deliveries/{delivery_id}/redeliver",
    summary="Send a delivery's event again (same id and body) as a new delivery",
    tag="webhooks",
    path_params={"delivery_id": INT_ID},
    response=DELIVERY,
    status=202,
    errors=(409,),
)
def redeliver_webhook(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return endpoints.delivery_json(
            endpoints.redeliver(s, call.path["delivery_id"], actor=call.actor)
        )
