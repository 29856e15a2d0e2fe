"""The admin API's OpenID Connect clients (``/api/v1/oidc-clients``): list, get, add, edit.

A thin mapping onto the JSON functions of :mod:`idp_service.oidc.clients`, which
check and audit. :func:`declare` adds the operations to the admin API's route
registry (and so to its OpenAPI document); ``oidc/web.py``'s ``init_app`` calls it
before the app factory registers the admin API.
"""

from __future__ import annotations

from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import OPERATIONS, Call
from idp_service.api.core import operation as op
from idp_service.oidc import clients

URIS = S.array(S.string(clients.MAX_URI, min_length=1))
SETTINGS: dict[str, dict[str, Any]] = {
    "name": S.string(256, min_length=1),
    "enabled": {"type": "boolean"},
    "mode": {"type": "string", "enum": list(clients.MODES)},
    "redirect_uris": URIS,
    "post_logout_redirect_uris": URIS,
    "token_auth_method": {"type": "string", "enum": list(clients.AUTH_METHODS)},
    "jwks": {"type": ["object", "null"]},
    "claims": {"type": "object", "additionalProperties": S.string(64)},
    "acr": S.string(128, min_length=1),
    "id_token_minutes": {"type": "integer", "minimum": 1, "maximum": 60},
    "eam_tenant_id": S.string(64, nullable=True),
    "eam_issuer": S.string(512, nullable=True),
    "eam_jwks_url": S.string(clients.MAX_URI, nullable=True),
    "eam_hint_max_age": {"type": "integer", "minimum": 0, "maximum": 3600},
    "eam_user_match": {"type": "string", "enum": list(clients.USER_MATCH)},
}
CLIENT = S.obj(
    {
        "client_id": {"type": "string"},
        "name": {"type": "string"},
        "enabled": {"type": "boolean"},
        "mode": {"type": "string"},
        "redirect_uris": S.array({"type": "string"}),
        "post_logout_redirect_uris": S.array({"type": "string"}),
        "token_auth_method": {"type": "string"},
        "has_secret": {"type": "boolean"},
        "jwks": {"type": ["object", "null"]},
        "claims": {"type": "object"},
        "acr": {"type": "string"},
        "id_token_minutes": {"type": "integer"},
        "eam_tenant_id": {"type": ["string", "null"]},
        "eam_issuer": {"type": ["string", "null"]},
        "eam_jwks_url": {"type": ["string", "null"]},
        "eam_hint_max_age": {"type": "integer"},
        "eam_user_match": {"type": "string"},
        "client_secret": {"type": "string"},
        "created_at": S.TIMESTAMP_OR_NULL,
        "updated_at": S.TIMESTAMP_OR_NULL,
    },
    ("client_id", "name", "mode", "redirect_uris", "token_auth_method"),
)
CLIENT_PATH = {"client_id": S.string(128, min_length=1)}


def list_clients(call: Call) -> dict[str, Any]:
    return {"items": clients.list_json(call.db)}


def get_client(call: Call) -> dict[str, Any]:
    return clients.get_json(call.db, call.path["client_id"])


def create_client(call: Call) -> dict[str, Any]:
    return clients.add_json(call.db, call.body, actor=call.actor)


def update_client(call: Call) -> dict[str, Any]:
    body = dict(call.body)
    rotate = bool(body.pop("rotate_secret", False))
    return clients.update_json(
        call.db, call.path["client_id"], body, rotate_secret=rotate, actor=call.actor
    )


def delete_client(call: Call) -> dict[str, Any]:
    return clients.remove_json(call.db, call.path["client_id"], actor=call.actor)


def declare() -> None:
    """Add the operations to the admin API (once per process)."""
    if any(o.handler is list_clients for o in OPERATIONS):
        return
    tag = "oidc-clients"
    op(
        "GET",
        "/oidc-clients",
        summary="Every OpenID Connect client",
        tag=tag,
        response=S.obj({"items": S.array(CLIENT)}, ("items",)),
    )(list_clients)
    op(
        "GET",
        "/oidc-clients/{client_id}",
        summary="One OpenID Connect client",
        tag=tag,
        path_params=CLIENT_PATH,
        response=CLIENT,
    )(get_client)
    op(
        "POST",
        "/oidc-clients",
        tag=tag,
        summary="Add a client; a confidential client's secret is in the answer, once",
        body=S.obj({"client_id": S.string(128, min_length=1), **SETTINGS}, ("redirect_uris",)),
        response=CLIENT,
        status=201,
        errors=(409,),
    )(create_client)
    op(
        "PATCH",
        "/oidc-clients/{client_id}",
        tag=tag,
        summary="Change a client's settings (rotate_secret: a new secret, in the answer once)",
        path_params=CLIENT_PATH,
        body=S.obj({**SETTINGS, "rotate_secret": {"type": "boolean"}}),
        response=CLIENT,
    )(update_client)
    op(
        "DELETE",
        "/oidc-clients/{client_id}",
        summary="Remove a client",
        tag=tag,
        path_params=CLIENT_PATH,
        response=S.obj({"removed": {"type": "string"}}, ("removed",)),
    )(delete_client)
