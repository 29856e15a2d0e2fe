"""Users and groups, read-only: SCIM owns them. Plus enrollment codes for a user."""

from __future__ import annotations

from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import ID, PAGING, Call, decode_cursor, encode_cursor, like, limit_of
from idp_service.api.core import operation as op
from idp_service.api.devices import DEVICE
from idp_service.devices import enroll
from idp_service.devices import queries as device_queries
from idp_service.directory import queries as directory_queries
from idp_service.platform.errors import Conflict, NotFound

NULLABLE = {"type": ["string", "null"]}
USER = S.obj(
    {
        "id": {"type": "string"},
        "user_name": {"type": "string"},
        "email": NULLABLE,
        "display_name": NULLABLE,
        "external_id": NULLABLE,
        "active": {"type": "boolean"},
        "deleted": {"type": "boolean"},
        "created_at": S.TIMESTAMP,
        "deactivated_at": S.TIMESTAMP_OR_NULL,
    },
    ("id", "user_name", "active", "deleted", "created_at"),
)
GROUP = S.obj(
    {
        "id": {"type": "string"},
        "display_name": {"type": "string"},
        "external_id": NULLABLE,
        "created_at": S.TIMESTAMP,
    },
    ("id", "display_name", "created_at"),
)
MEMBER = S.obj(
    {"value": {"type": "string"}, "type": {"type": "string"}, "display": NULLABLE},
    ("value", "type"),
)


@op(
    "GET",
    "/users",
    summary="List users (from SCIM), by userName, paged",
    tag="directory",
    query={"q": S.string(256), "active": {"type": "boolean"}, **PAGING},
    response=S.page(USER),
)
def list_users(call: Call) -> dict[str, Any]:
    limit = limit_of(call)
    after = None
    if call.query.get("cursor"):
        key, last_id = decode_cursor(call.query["cursor"], (str, str))
        after = (key, last_id)
    with call.db.session() as s:
        rows = directory_queries.user_page(
            s,
            limit=limit,
            active=call.query.get("active"),
            pattern=like(call.query["q"]) if call.query.get("q") else None,
            after=after,
        )
    last = rows[limit - 1] if len(rows) > limit else None
    return {
        "items": [directory_queries.user_json(u) for u in rows[:limit]],
        "next_cursor": encode_cursor([last.user_name_lower, last.id]) if last else None,
    }


@op(
    "GET",
    "/users/{user_id}",
    summary="One user with their groups and devices",
    tag="directory",
    path_params={"user_id": ID},
    response=S.obj(
        {"user": USER, "groups": S.array(GROUP), "devices": S.array(DEVICE)},
        ("user", "groups", "devices"),
    ),
)
def get_user(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        user = directory_queries.get_user(s, call.path["user_id"])
        if user is None:
            raise NotFound("user_not_found", f"no user {call.path['user_id']!r}")
        groups = directory_queries.groups_of(s, user.id)
        devices = device_queries.of_user(s, user.id)
        return {
            "user": directory_queries.user_json(user),
            "groups": [directory_queries.group_json(g) for g in groups],
            "devices": [device_queries.device_json(d, user) for d in devices],
        }


@op(
    "GET",
    "/groups",
    summary="List groups (from SCIM), by name, paged",
    tag="directory",
    query={"q": S.string(256), **PAGING},
    response=S.page(GROUP),
)
def list_groups(call: Call) -> dict[str, Any]:
    limit = limit_of(call)
    after = None
    if call.query.get("cursor"):
        key, last_id = decode_cursor(call.query["cursor"], (str, str))
        after = (key, last_id)
    with call.db.session() as s:
        rows = directory_queries.group_page(
            s,
            limit=limit,
            pattern=like(call.query["q"]) if call.query.get("q") else None,
            after=after,
        )
    last = rows[limit - 1] if len(rows) > limit else None
    return {
        "items": [directory_queries.group_json(g) for g in rows[:limit]],
        "next_cursor": encode_cursor([last.display_name_key, last.id]) if last else None,
    }


@op(
    "GET",
    "/groups/{group_id}",
    summary="One group with its members",
    tag="directory",
    path_params={"group_id": ID},
    response=S.obj({"group": GROUP, "members": S.array(MEMBER)}, ("group", "members")),
)
def get_group(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        group = directory_queries.get_group(s, call.path["group_id"])
        if group is None:
            raise NotFound("group_not_found", f"no group {call.path['group_id']!r}")
        members = directory_queries.members(s, group.id)
        return {
            "group": directory_queries.group_json(group),
            "members": [{"value": m.value, "type": m.type, "display": m.display} for m in members],
        }


@op(
    "POST",
    "/users/{user_id}/enrollment-codes",
    summary="Make a one-time enrollment code for a user (the code is returned once)",
    tag="directory",
    path_params={"user_id": ID},
    body=S.obj({"ttl_seconds": {"type": "integer", "minimum": 60, "maximum": 30 * 86400}}),
    response=S.obj(
        {
            "id": {"type": "integer"},
            "code": {"type": "string"},
            "user_id": {"type": "string"},
            "user": {"type": "string"},
            "expires_at": S.TIMESTAMP,
        },
        ("id", "code", "user_id", "user", "expires_at"),
    ),
    status=201,
    errors=(409,),
)
def create_enrollment_code(call: Call) -> dict[str, Any]:
    ttl = call.body.get("ttl_seconds", 24 * 3600)
    with call.db.session() as s:
        user = directory_queries.get_user(s, call.path["user_id"])
        if user is None or user.deleted_at is not None:
            raise NotFound("user_not_found", f"no user {call.path['user_id']!r}")
        if not user.active:
            raise Conflict("user_inactive", "the user is deactivated")
        code, row = enroll.create_code(s, user, ttl_seconds=ttl, created_by=call.actor)
        return {
            "id": row.id,
            "code": code,
            "user_id": user.id,
            "user": user.user_name,
            "expires_at": row.expires_at.isoformat(),
        }
