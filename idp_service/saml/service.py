"""The SAML surface's service: per-process SAML state, and the SSO endpoints' decisions.

Per-process state kept on :class:`~idp_service.services.Services`: the key ring and the
persistent-NameID secret, loaded once per process, never per request.

The SSO endpoints (``saml/web.py``) read the HTTP request and render pages; what an
AuthnRequest or an IdP-initiated request leads to is decided here:

* :func:`start_sso` checks a request read from either binding against its SP, then
  records its ID as used and starts the login transaction in one write
  (``saml/store.py``); a refusal writes nothing.
* :func:`reject` audits a refusal answered with an error page; :func:`status_response`
  audits one answered at the SP's (trusted) ACS and returns the signed status Response.
* :func:`idp_initiated_context` finds the SP of an unsolicited sign-in and returns the
  login transaction's context.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from idp_service.platform import audit
from idp_service.platform.keys import load_secret
from idp_service.platform.models import utcnow
from idp_service.saml import registry as sp_registry
from idp_service.saml import store as sso_sql
from idp_service.saml.errors import SamlError
from idp_service.saml.keys import KeyRing
from idp_service.saml.protocol import authn_request, response
from idp_service.saml.protocol.constants import KEY_TYPE_FOR_ALGORITHM
from idp_service.saml.protocol.metadata import entity_id, sso_url
from idp_service.services import Services
from idp_service.signin import transactions

PERSISTENT_SECRET = "saml.persistent_nameid"  # noqa: S105 - a row name, not a secret


def keys(service: Services) -> KeyRing:
    """The process's signing key ring (the app factory puts a :class:`KeyRing` there)."""
    ring = service.saml_keys
    if not isinstance(ring, KeyRing):
        raise TypeError("Services.saml_keys must be a saml.keys.KeyRing")
    return ring


def persistent_secret(service: Services) -> bytes:
    """The HMAC key of persistent NameIDs, shared by every replica."""
    secret = service.saml_persistent_secret
    if secret is None:
        secret = service.saml_persistent_secret = load_secret(service.db, PERSISTENT_SECRET)
    return secret


def idp_entity_id(service: Services) -> str:
    """This IdP's entityID."""
    return entity_id(service.settings.public_url)


def idp_sso_url(service: Services) -> str:
    """This IdP's SSO endpoint."""
    return sso_url(service.settings.public_url)


# -- SP-initiated SSO ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SsoStart:
    """What became of an AuthnRequest: a login transaction, or a refusal.

    A refusal carries the request's Issuer as sent (for the audit), and ``accepted``
    once the SP and its ACS were trusted: then an error with a SAML status is answered
    at that ACS (:func:`status_response`) rather than with an error page.
    """

    txn_id: str | None = None
    error: SamlError | None = None
    issuer: str | None = None
    accepted: authn_request.Accepted | None = None


def start_sso(service: Services, incoming: authn_request.Incoming) -> SsoStart:
    """Check an AuthnRequest read from a binding and start its login transaction.

    Reads the SP, checks everything, then records the request ID as used and starts the
    login transaction in one write. A refusal writes nothing (its audit event is the
    caller's: :func:`reject` or :func:`status_response`).
    """
    issuer: str | None = None
    accepted: authn_request.Accepted | None = None
    try:
        parsed = authn_request.parse(incoming.xml)
        issuer = parsed.issuer
        sp = sso_sql.find_sp(service.db.engine, parsed.issuer)
        accepted = authn_request.check(incoming, parsed, sp, sso_url=idp_sso_url(service))
        authn_request.policy_check(accepted)
        txn_id = transactions.new_id()
        if not sso_sql.accept(
            service.db.engine,
            sp_entity_id=accepted.sp_entity_id,
            request_id=accepted.request.id,
            seen_until=authn_request.seen_until(accepted),
            txn_id=txn_id,
            context={"kind": "saml", **accepted.context()},
            expires_at=utcnow() + dt.timedelta(seconds=service.settings.login_ttl),
        ):
            raise SamlError("saml_replayed", "this request ID was already used", status=409)
    except SamlError as exc:
        return SsoStart(error=exc, issuer=issuer, accepted=accepted)
    return SsoStart(txn_id=txn_id, issuer=issuer, accepted=accepted)


def reject(
    service: Services,
    exc: SamlError,
    *,
    sp_hint: str | None,
    binding: str,
    remote_addr: str | None,
) -> None:
    """Audit a request refused with an error page (``saml.sso`` rejected)."""
    audit.record_separately(
        service.db,
        "saml.sso",
        "rejected",
        code=exc.code,
        remote_addr=remote_addr,
        details={"binding": binding, "sp": (sp_hint or "")[:256] or None},
    )


def status_response(
    service: Services,
    exc: SamlError,
    accepted: authn_request.Accepted,
    *,
    remote_addr: str | None,
) -> str:
    """The encoded, signed SAML status Response that answers the SP (its ACS is trusted by
    now) instead of an assertion; the refusal is audited."""
    sp = accepted.sp_settings
    key = keys(service).active(KEY_TYPE_FOR_ALGORITHM[sp["signature_algorithm"]])
    target = response.Target(
        issuer=idp_entity_id(service),
        acs_url=accepted.acs_url,
        in_response_to=accepted.request.id,
        sign_response=sp["sign_response"],
        sign_assertion=sp["sign_assertion"],
    )
    xml = response.failure(target, exc.saml_status or (), key, message=exc.code)
    audit.record_separately(
        service.db,
        "saml.sso",
        "rejected",
        code=exc.code,
        remote_addr=remote_addr,
        details={
            "binding": accepted.binding,
            "sp": accepted.sp_entity_id,
            "request_id": accepted.request.id,
            **(exc.audit_details or {}),
        },
    )
    return response.encode(xml)


# -- IdP-initiated SSO --------------------------------------------------------------------------

MAX_SP_PARAM = 1024


def idp_initiated_context(service: Services, ident: str, relay_state: str | None) -> dict[str, Any]:
    """The login transaction's context for unsolicited SSO to the SP ``ident`` (entityID or
    name); a :class:`SamlError` when the SP is unknown, disabled or does not allow it."""
    if not ident or len(ident) > MAX_SP_PARAM:
        raise SamlError("saml_unknown_sp", "name the SP with ?sp=", status=404)
    relay_state = authn_request.check_relay_state(relay_state)
    with service.db.session() as s:
        try:
            sp = sp_registry.get(s, ident)
        except sp_registry.RegistryError:
            raise SamlError("saml_unknown_sp", "no such SP", status=404) from None
    if not sp.enabled:
        raise SamlError("saml_sp_disabled", status=403)
    if not sp.allow_idp_initiated or sp.identity_broker:
        raise SamlError("saml_idp_initiated_disabled", status=403)
    acs_url = sp_registry.resolve_acs(sp)
    return {
        "sp": sp_registry.snapshot(sp),
        "sp_entity_id": sp.entity_id,
        "sp_name": sp.name,
        "acs_url": acs_url,
        "binding": "idp-initiated",
        "request_id": None,
        "relay_state": relay_state,
        "nameid_format": None,
        "broker_subject": None,
        "tofu_subject": None,
    }
