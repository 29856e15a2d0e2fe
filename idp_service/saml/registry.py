"""The SP registry: import SP metadata, keep per-SP settings, find SPs and their ACS endpoints.

An SP is added from its metadata XML (``EntityDescriptor`` with an
``SPSSODescriptor``): its entityID, its HTTP-POST AssertionConsumerService
endpoints (URL, binding, index, isDefault), and its signing and encryption
certificates. Settings default from the metadata (``AuthnRequestsSigned``, the
first supported ``NameIDFormat``; ``requested_authn_context`` is ``strict``) and
can be changed later; re-importing
metadata refreshes endpoints and certificates and keeps the settings.

Every function here takes a SQLAlchemy session and raises :class:`RegistryError`
(a ``ValueError`` with a stable code) on bad input, so the CLI and the admin API
share one layer. What a sign-in reads off a registered SP (its ACS, its settings
snapshot) is :mod:`idp_service.saml.protocol.sp_view`, re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import utcnow
from idp_service.saml import attributes as attrs
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import xmlsafe
from idp_service.saml.protocol.constants import (
    BINDING_POST,
    NAMEID_FORMATS,
    NAMEID_SHORT,
    NS_DS,
    NS_MD,
    SIGNATURE_ALGORITHMS,
)
from idp_service.saml.protocol.sp_view import resolve_acs as resolve_acs
from idp_service.saml.protocol.sp_view import snapshot as snapshot
from idp_service.saml.tables import ServiceProvider

MAX_METADATA = 512 * 1024
_MD = f"{{{NS_MD}}}"
_DS = f"{{{NS_DS}}}"
_TRUE = ("true", "1")

# Settings an administrator may change, with their types.
SETTINGS: dict[str, type] = {
    "name": str,
    "enabled": bool,
    "nameid_format": str,
    "attributes": dict,
    "require_signed_requests": bool,
    "sign_response": bool,
    "sign_assertion": bool,
    "signature_algorithm": str,
    "encrypt_assertion": bool,
    "allow_idp_initiated": bool,
    "identity_broker": bool,
    "session_minutes": int,
    "requested_authn_context": str,
}
# How an SP's RequestedAuthnContext that we cannot satisfy is answered (authn_context.py).
AUTHN_CONTEXT_MODES = ("strict", "lenient")


class RegistryError(ValueError):
    """Refused SP input, with a stable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SpMetadata:
    """What devicetrust takes from an SP's metadata."""

    entity_id: str
    acs: list[dict[str, Any]]
    signing_certs: list[str]
    encryption_certs: list[str]
    nameid_formats: list[str]
    authn_requests_signed: bool
    name: str | None


def _tristate(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in _TRUE


def _cert_pem(text: str | None) -> str:
    raw = "".join((text or "").split())
    try:
        der = base64.b64decode(raw, validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise RegistryError(
            "metadata_invalid", f"unreadable certificate in metadata: {exc}"
        ) from None
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def parse_metadata(xml: bytes, entity_id: str | None = None) -> SpMetadata:
    """Read an SP's metadata (hardened parser); pick ``entity_id`` from an aggregate."""
    try:
        root = xmlsafe.parse(xml, max_size=MAX_METADATA)
    except SamlError as exc:
        raise RegistryError(
            "metadata_invalid", f"metadata is not acceptable XML ({exc.code})"
        ) from None
    if root.tag == _MD + "EntityDescriptor":
        candidates = [root]
    elif root.tag == _MD + "EntitiesDescriptor":
        candidates = list(root.iter(_MD + "EntityDescriptor"))
    else:
        raise RegistryError("metadata_invalid", "expected an md:EntityDescriptor")
    candidates = [c for c in candidates if c.find(_MD + "SPSSODescriptor") is not None]
    if entity_id is not None:
        candidates = [c for c in candidates if c.get("entityID") == entity_id]
    if len(candidates) != 1:
        raise RegistryError(
            "metadata_invalid",
            "expected exactly one EntityDescriptor with an SPSSODescriptor"
            + (" (choose one with --entity-id)" if len(candidates) > 1 else ""),
        )
    entity = candidates[0]
    eid = (entity.get("entityID") or "").strip()
    if not eid or len(eid) > 1024:
        raise RegistryError("metadata_invalid", "the entityID is missing or too long")
    sp = entity.find(_MD + "SPSSODescriptor")
    assert sp is not None  # the candidates above are the entities that have one
    acs: list[dict[str, Any]] = []
    for pos, el in enumerate(sp.findall(_MD + "AssertionConsumerService")):
        if el.get("Binding") != BINDING_POST:
            continue  # responses are delivered by HTTP-POST only
        location = (el.get("Location") or "").strip()
        if not location.startswith(("https://", "http://")):
            raise RegistryError(
                "metadata_invalid", f"ACS Location {location!r} is not an http(s) URL"
            )
        try:
            index = int(el.get("index", pos))
        except ValueError:
            raise RegistryError("metadata_invalid", "ACS index is not an integer") from None
        acs.append(
            {
                "binding": BINDING_POST,
                "location": location,
                "index": index,
                "is_default": _tristate(el.get("isDefault")),
            }
        )
    if not acs:
        raise RegistryError(
            "metadata_invalid", "the SP has no AssertionConsumerService with the HTTP-POST binding"
        )
    if len({a["index"] for a in acs}) != len(acs):
        raise RegistryError("metadata_invalid", "two ACS endpoints share an index")
    signing: list[str] = []
    encryption: list[str] = []
    for kd in sp.findall(_MD + "KeyDescriptor"):
        use = kd.get("use")
        for cert_el in kd.iter(_DS + "X509Certificate"):
            pem = _cert_pem(cert_el.text)
            if use in (None, "signing") and pem not in signing:
                signing.append(pem)
            if use in (None, "encryption") and pem not in encryption:
                encryption.append(pem)
    formats = [
        NAMEID_SHORT[f.text.strip()]
        for f in sp.findall(_MD + "NameIDFormat")
        if f.text and f.text.strip() in NAMEID_SHORT
    ]
    name_el = entity.find(f"{_MD}Organization/{_MD}OrganizationDisplayName")
    return SpMetadata(
        entity_id=eid,
        acs=acs,
        signing_certs=signing,
        encryption_certs=encryption,
        nameid_formats=formats,
        authn_requests_signed=(sp.get("AuthnRequestsSigned") or "").lower() in _TRUE,
        name=((name_el.text or "").strip() or None) if name_el is not None else None,
    )


def _check_settings(values: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        kind = SETTINGS.get(key)
        if kind is None:
            raise RegistryError("setting_unknown", f"unknown setting {key!r}")
        if kind is bool and not isinstance(value, bool):
            raise RegistryError("setting_invalid", f"{key} must be true or false")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise RegistryError("setting_invalid", f"{key} must be an integer")
        if kind in (str, dict) and not isinstance(value, kind):
            raise RegistryError("setting_invalid", f"{key} must be a {kind.__name__}")
        clean[key] = value
    if "nameid_format" in clean and clean["nameid_format"] not in NAMEID_FORMATS:
        raise RegistryError(
            "setting_invalid", f"nameid_format must be one of {', '.join(NAMEID_FORMATS)}"
        )
    if "signature_algorithm" in clean and clean["signature_algorithm"] not in SIGNATURE_ALGORITHMS:
        raise RegistryError(
            "setting_invalid",
            f"signature_algorithm must be one of {', '.join(SIGNATURE_ALGORITHMS)}",
        )
    if (
        "requested_authn_context" in clean
        and clean["requested_authn_context"] not in AUTHN_CONTEXT_MODES
    ):
        raise RegistryError(
            "setting_invalid",
            f"requested_authn_context must be one of {', '.join(AUTHN_CONTEXT_MODES)}",
        )
    if "attributes" in clean:
        try:
            clean["attributes"] = attrs.validate_mapping(clean["attributes"])
        except ValueError as exc:
            raise RegistryError("setting_invalid", str(exc)) from None
    if "session_minutes" in clean and not 1 <= clean["session_minutes"] <= 7 * 24 * 60:
        raise RegistryError("setting_invalid", "session_minutes must be between 1 and 10080")
    if "name" in clean and not 0 < len(clean["name"].strip()) <= 256:
        raise RegistryError("setting_invalid", "name must be 1 to 256 characters")
    return clean


def _validate_row(sp: ServiceProvider) -> None:
    if not (sp.sign_response or sp.sign_assertion):
        raise RegistryError(
            "setting_invalid", "sign the response, the assertion, or both (never neither)"
        )
    if sp.encrypt_assertion and not sp.encryption_certs:
        raise RegistryError(
            "setting_invalid", "encrypt_assertion needs an encryption certificate in the metadata"
        )
    if (sp.require_signed_requests or sp.identity_broker) and not sp.signing_certs:
        raise RegistryError(
            "setting_invalid", "signed requests need a signing certificate in the SP's metadata"
        )
    if sp.identity_broker:
        sp.require_signed_requests = True  # factor mode trusts the broker's signed subject


def add(
    session: Session,
    metadata_xml: bytes,
    *,
    entity_id: str | None = None,
    actor: str | None = None,
    **settings: Any,
) -> ServiceProvider:
    """Register an SP from its metadata, with optional settings."""
    md = parse_metadata(metadata_xml, entity_id)
    clean = _check_settings(settings)
    if find(session, md.entity_id) is not None:
        raise RegistryError("sp_exists", f"an SP with entityID {md.entity_id!r} exists already")
    sp = ServiceProvider(
        id=uuid.uuid4().hex,
        entity_id=md.entity_id,
        name=md.name or md.entity_id[:256],
        enabled=True,
        metadata_xml=metadata_xml.decode("utf-8", "replace"),
        acs=md.acs,
        signing_certs=md.signing_certs,
        encryption_certs=md.encryption_certs,
        nameid_format=md.nameid_formats[0] if md.nameid_formats else "emailAddress",
        attributes=dict(attrs.DEFAULT_MAPPING),
        require_signed_requests=md.authn_requests_signed,
        sign_response=True,
        sign_assertion=True,
        signature_algorithm="rsa-sha256",
        encrypt_assertion=False,
        allow_idp_initiated=False,
        identity_broker=False,
        session_minutes=480,
        requested_authn_context="strict",
    )
    for key, value in clean.items():
        setattr(sp, key, value)
    _validate_row(sp)
    session.add(sp)
    try:
        session.flush()
    except IntegrityError:
        raise RegistryError(
            "sp_exists", f"an SP with entityID {md.entity_id!r} exists already"
        ) from None
    audit.record(session, "saml.sp.add", "ok", actor=actor, details={"sp": sp.entity_id})
    return sp


def update(
    session: Session,
    ident: str,
    *,
    metadata_xml: bytes | None = None,
    actor: str | None = None,
    **settings: Any,
) -> ServiceProvider:
    """Change an SP's settings and/or refresh it from new metadata (same entityID)."""
    sp = get(session, ident)
    clean = _check_settings(settings)
    if metadata_xml is not None:
        md = parse_metadata(metadata_xml, sp.entity_id)
        sp.metadata_xml = metadata_xml.decode("utf-8", "replace")
        sp.acs = md.acs
        sp.signing_certs = md.signing_certs
        sp.encryption_certs = md.encryption_certs
    for key, value in clean.items():
        setattr(sp, key, value)
    _validate_row(sp)
    sp.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        "saml.sp.update",
        "ok",
        actor=actor,
        details={
            "sp": sp.entity_id,
            "changed": sorted(clean) + (["metadata"] if metadata_xml else []),
        },
    )
    return sp


def remove(session: Session, ident: str, *, actor: str | None = None) -> str:
    """Delete an SP; returns its entityID."""
    sp = get(session, ident)
    entity_id = sp.entity_id
    session.delete(sp)
    session.flush()
    audit.record(session, "saml.sp.remove", "ok", actor=actor, details={"sp": entity_id})
    return entity_id


def find(session: Session, entity_id: str) -> ServiceProvider | None:
    """The SP with exactly this entityID, or None."""
    return session.execute(
        select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
    ).scalar_one_or_none()


def get(session: Session, ident: str) -> ServiceProvider:
    """The SP by id, entityID or name; ``RegistryError("sp_unknown")`` otherwise."""
    if "\x00" in ident:  # no SP is named so, and PostgreSQL refuses a NUL in a query
        raise RegistryError("sp_unknown", "no SP has a NUL in its name")
    rows = list(
        session.scalars(
            select(ServiceProvider).where(
                or_(
                    ServiceProvider.id == ident,
                    ServiceProvider.entity_id == ident,
                    ServiceProvider.name == ident,
                )
            )
        )
    )
    exact = [r for r in rows if ident in (r.id, r.entity_id)]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise RegistryError("sp_ambiguous", f"several SPs are named {ident!r}; use the entityID")
    raise RegistryError("sp_unknown", f"no SP {ident!r}")


def list_all(session: Session) -> list[ServiceProvider]:
    """Every SP, by name."""
    return list(session.scalars(select(ServiceProvider).order_by(ServiceProvider.name)))


def to_json(sp: ServiceProvider, *, with_metadata: bool = False) -> dict[str, Any]:
    """An SP as the CLI and the admin API show it (certificates as PEM)."""
    data: dict[str, Any] = {
        "id": sp.id,
        "entity_id": sp.entity_id,
        "acs": sp.acs,
        "signing_certs": sp.signing_certs,
        "encryption_certs": sp.encryption_certs,
        **{key: getattr(sp, key) for key in SETTINGS},
        "created_at": sp.created_at.isoformat() if sp.created_at else None,
        "updated_at": sp.updated_at.isoformat() if sp.updated_at else None,
    }
    if with_metadata:
        data["metadata_xml"] = sp.metadata_xml
    return data
