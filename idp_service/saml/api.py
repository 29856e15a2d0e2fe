"""JSON functions for managing SPs and keys: the layer under the admin API and the CLI.

Each function takes the database and plain JSON values, and returns JSON
values or raises a :class:`~idp_service.platform.errors.ServiceError` with a stable code
(``sp_unknown`` 404, ``sp_exists`` 409, ``metadata_invalid``/``setting_*`` 400).
The admin API blueprint only has to map routes onto these.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict, Invalid, NotFound, ServiceError
from idp_service.saml import keys
from idp_service.saml import registry as sp_registry
from idp_service.saml.protocol.constants import KEY_TYPE_FOR_ALGORITHM

_KIND: dict[str, type[ServiceError]] = {
    "sp_unknown": NotFound,
    "sp_exists": Conflict,
    "sp_ambiguous": Conflict,
}


def _api_error(exc: sp_registry.RegistryError) -> ServiceError:
    return _KIND.get(exc.code, Invalid)(exc.code, exc.message)


@overload
def _metadata_bytes(body: dict[str, Any], required: Literal[True]) -> bytes: ...
@overload
def _metadata_bytes(body: dict[str, Any], required: bool) -> bytes | None: ...
def _metadata_bytes(body: dict[str, Any], required: bool) -> bytes | None:
    xml = body.get("metadata_xml")
    if xml is None:
        if required:
            raise Invalid("metadata_invalid", "metadata_xml (the SP's metadata) is required")
        return None
    if not isinstance(xml, str):
        raise Invalid("metadata_invalid", "metadata_xml must be a string")
    return xml.encode("utf-8")


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in sp_registry.SETTINGS}


def _reject_unknown(body: dict[str, Any], extra: tuple[str, ...]) -> None:
    unknown = set(body) - set(sp_registry.SETTINGS) - set(extra)
    if unknown:
        raise Invalid("setting_unknown", f"unknown fields: {', '.join(sorted(unknown))}")


def _ensure_key(db: Database, sp: dict[str, Any]) -> None:
    # Publish the key an SP needs before it is first used (metadata must list it).
    keys.ensure_active(db, KEY_TYPE_FOR_ALGORITHM[sp["signature_algorithm"]])


def list_sps(db: Database) -> list[dict[str, Any]]:
    """Every SP."""
    with db.session() as s:
        return [sp_registry.to_json(sp) for sp in sp_registry.list_all(s)]


def get_sp(db: Database, ident: str, *, with_metadata: bool = False) -> dict[str, Any]:
    """One SP by id, entityID or name."""
    try:
        with db.session() as s:
            return sp_registry.to_json(sp_registry.get(s, ident), with_metadata=with_metadata)
    except sp_registry.RegistryError as exc:
        raise _api_error(exc) from None


def create_sp(db: Database, body: dict[str, Any], *, actor: str | None = None) -> dict[str, Any]:
    """Register an SP: ``{"metadata_xml": ..., "entity_id"?: ..., <settings>}``."""
    if not isinstance(body, dict):
        raise Invalid("malformed", "send a JSON object")
    _reject_unknown(body, ("metadata_xml", "entity_id"))
    xml = _metadata_bytes(body, required=True)
    try:
        with db.session() as s:
            sp = sp_registry.add(
                s, xml, entity_id=body.get("entity_id"), actor=actor, **_settings(body)
            )
            data = sp_registry.to_json(sp)
    except sp_registry.RegistryError as exc:
        raise _api_error(exc) from None
    _ensure_key(db, data)
    return data


def update_sp(
    db: Database, ident: str, body: dict[str, Any], *, actor: str | None = None
) -> dict[str, Any]:
    """Change settings and/or refresh metadata: ``{"metadata_xml"?: ..., <settings>}``."""
    if not isinstance(body, dict):
        raise Invalid("malformed", "send a JSON object")
    _reject_unknown(body, ("metadata_xml",))
    try:
        with db.session() as s:
            sp = sp_registry.update(
                s, ident, metadata_xml=_metadata_bytes(body, False), actor=actor, **_settings(body)
            )
            data = sp_registry.to_json(sp)
    except sp_registry.RegistryError as exc:
        raise _api_error(exc) from None
    _ensure_key(db, data)
    return data


def delete_sp(db: Database, ident: str, *, actor: str | None = None) -> dict[str, Any]:
    """Remove an SP; returns ``{"removed": entityID}``."""
    try:
        with db.session() as s:
            return {"removed": sp_registry.remove(s, ident, actor=actor)}
    except sp_registry.RegistryError as exc:
        raise _api_error(exc) from None


def list_keys(db: Database) -> list[dict[str, Any]]:
    """Every IdP signing key (public facts only), creating the RSA key on first use."""
    keys.ensure_active(db, "rsa")
    with db.session() as s:
        return [keys.key_to_json(k) for k in keys.list_keys(s)]


def rotate_keys(
    db: Database, key_type: str, step: str, *, actor: str | None = None
) -> dict[str, Any]:
    """One rollover step for ``key_type``: ``stage``, ``activate`` or ``retire``."""
    if key_type not in keys.KEY_TYPES:
        raise Invalid("setting_invalid", f"key_type must be one of {', '.join(keys.KEY_TYPES)}")
    keys.ensure_active(db, key_type)
    with db.session() as s:
        if step == "stage":
            row = keys.stage_next(s, key_type, actor=actor)
            return {"step": step, "key": keys.key_to_json(row)}
        if step == "activate":
            try:
                row = keys.activate_next(s, key_type, actor=actor)
            except LookupError as exc:
                raise Conflict("key_not_staged", str(exc)) from None
            return {"step": step, "key": keys.key_to_json(row)}
        if step == "retire":
            return {"step": step, "retired": keys.retire_previous(s, key_type, actor=actor)}
    raise Invalid("setting_invalid", "step must be stage, activate or retire")
