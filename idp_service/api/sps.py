"""SAML service providers: list, get, add from metadata XML, update, remove.

A thin mapping onto :mod:`idp_service.saml.api`, which validates and audits.
"""

from __future__ import annotations

from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import Call
from idp_service.api.core import operation as op
from idp_service.saml import api as saml_api
from idp_service.saml.registry import AUTHN_CONTEXT_MODES, SETTINGS

_KIND = {
    str: S.string(4096),
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    dict: {"type": "object"},
}
SETTINGS_SCHEMA = {key: _KIND[kind] for key, kind in SETTINGS.items()}
# strict: NoAuthnContext when the SP's RequestedAuthnContext cannot be satisfied;
# lenient: assert the device-bound class anyway.
SETTINGS_SCHEMA["requested_authn_context"] = {"type": "string", "enum": list(AUTHN_CONTEXT_MODES)}
SP = S.obj(
    {
        "id": {"type": "string"},
        "entity_id": {"type": "string"},
        "acs": {"type": "array"},
        "signing_certs": S.array({"type": "string"}),
        "encryption_certs": S.array({"type": "string"}),
        **{key: {"type": [schema["type"], "null"]} for key, schema in SETTINGS_SCHEMA.items()},
        "created_at": S.TIMESTAMP_OR_NULL,
        "updated_at": S.TIMESTAMP_OR_NULL,
        "metadata_xml": {"type": ["string", "null"]},
    },
    ("id", "entity_id", "acs", "signing_certs", "encryption_certs"),
)
SP_PATH = {"sp": S.string(256, min_length=1)}
METADATA = S.string(1_000_000, min_length=1)


@op(
    "GET",
    "/sps",
    summary="Every SAML service provider",
    tag="sps",
    response=S.obj({"items": S.array(SP)}, ("items",)),
)
def list_sps(call: Call) -> dict[str, Any]:
    return {"items": saml_api.list_sps(call.db)}


@op(
    "GET",
    "/sps/{sp}",
    summary="One SP by id or name (metadata=true adds its metadata XML)",
    tag="sps",
    path_params=SP_PATH,
    query={"metadata": {"type": "boolean"}},
    response=SP,
    errors=(409,),
)
def get_sp(call: Call) -> dict[str, Any]:
    return saml_api.get_sp(call.db, call.path["sp"], with_metadata=bool(call.query.get("metadata")))


@op(
    "POST",
    "/sps",
    summary="Add an SP from its metadata XML, with optional settings",
    tag="sps",
    body=S.obj(
        {"metadata_xml": METADATA, "entity_id": S.string(1024), **SETTINGS_SCHEMA},
        ("metadata_xml",),
    ),
    response=SP,
    status=201,
    errors=(409,),
)
def create_sp(call: Call) -> dict[str, Any]:
    return saml_api.create_sp(call.db, call.body, actor=call.actor)


@op(
    "PATCH",
    "/sps/{sp}",
    summary="Change an SP's settings and/or refresh its metadata",
    tag="sps",
    path_params=SP_PATH,
    body=S.obj({"metadata_xml": METADATA, **SETTINGS_SCHEMA}),
    response=SP,
    errors=(409,),
)
def update_sp(call: Call) -> dict[str, Any]:
    return saml_api.update_sp(call.db, call.path["sp"], call.body, actor=call.actor)


@op(
    "DELETE",
    "/sps/{sp}",
    summary="Remove an SP",
    tag="sps",
    path_params=SP_PATH,
    response=S.obj({"removed": {"type": "string"}}, ("removed",)),
    errors=(409,),
)
def delete_sp(call: Call) -> dict[str, Any]:
    return saml_api.delete_sp(call.db, call.path["sp"], actor=call.actor)
