"""Turning a finished login transaction into exactly one SAML Response.

Registered as ``login.LOGIN_COMPLETERS["saml"]``. ``/login/<txn>/continue``
calls it with the transaction (``verified``: the device was trusted and its
owner active, rechecked just now; or ``denied`` with a reason). The completer:

* uses the SP's settings as they were when the request was accepted (frozen in
  the transaction's context), so it reads nothing from the registry;
* builds and signs the Response, then claims the transaction with one
  conditional write (``storage/login_sql.complete_verified``) that also rechecks,
  in the same statement, that the device is still trusted and its owner active,
  and records the audit event: only the first call issues anything, a second
  gets an error page, and a revocation committed before the claim wins;
* in factor mode (``identity_broker`` SP) refuses unless the device's owner is
  the user the broker named in its signed request;
* on success returns the auto-POST form carrying the signed Response;
* otherwise returns a page that says why, with a button that takes a
  ``Responder/AuthnFailed`` Response to the SP.
"""

from __future__ import annotations

from flask import Response
from sqlalchemy import update

from idp_service import audit, transactions
from idp_service.blueprints.login import MESSAGES
from idp_service.context import ServiceContext, ctx
from idp_service.errors import HINTS
from idp_service.saml import assertion, attributes, pages, response, service
from idp_service.saml.constants import (
    KEY_TYPE_FOR_ALGORITHM,
    STATUS_AUTHN_FAILED,
    STATUS_RESPONDER,
)
from idp_service.saml.errors import SamlError
from idp_service.storage.login_reads import read_login
from idp_service.storage.login_sql import complete_verified
from idp_service.storage.models import Device, LoginTransaction, User, utcnow

FACTOR_MESSAGES = {
    "subject_mismatch": "This device belongs to a different user than the one the "
    "application asked devicetrust to verify.",
}
FACTOR_HINTS = {
    "subject_mismatch": "Sign in to the application as the owner of this device, "
    "or use your own device.",
}


def same_user(subject: str, user: User) -> bool:
    """True when a broker's subject names ``user`` (userName or e-mail, case-insensitive)."""
    wanted = subject.strip().casefold()
    return wanted in {user.user_name.casefold(), (user.email or "").casefold()}


def tofu_subject(txn: LoginTransaction) -> str | None:
    """The user an identity broker vouched for in a *signed* request, or None.

    This is the hook for TOFU registration in factor mode: when the device
    presented on the login page is unknown, the login page may bind it to this
    user instead of asking for an enrollment code, because the broker (Okta,
    Entra ID, ...) already authenticated the user and signed the claim.
    """
    context = txn.context or {}
    if context.get("kind") != "saml":
        return None
    return context.get("tofu_subject")


def _why_not_claimed(svc: ServiceContext, txn: LoginTransaction) -> str | None:
    """The success claim was refused: None if the transaction was completed already,
    otherwise the refusal code (recorded on the transaction if it was still verified)."""
    found = read_login(svc.db.engine, txn.id)
    if found is None or found[0].completed_at is not None:
        return None
    fresh, user, device = found
    if fresh.status != "verified":
        return fresh.error_code or "expired"
    code = "owner_inactive" if user is not None and not user.active else "device_revoked"
    if device is not None and device.state == "suspended":
        code = "device_suspended"
    with svc.db.session() as s:
        transactions.mark_denied(
            s, txn.id, code=code, device_id=fresh.device_id, user_id=fresh.user_id
        )
    return code


def complete(txn: LoginTransaction, user: User | None, device: Device | None) -> Response:
    """Issue the one Response this transaction is allowed (see the module doc)."""
    svc = ctx()
    c = txn.context or {}
    sp = c.get("sp")
    if not sp or not c.get("acs_url"):
        exc = SamlError("saml_malformed", "not a SAML sign-in", status=400)
        audit.record_separately(svc.db, "saml.response", "rejected", code=exc.code)
        return pages.error(exc)
    # Load (or create) shared material before the write transaction: on SQLite a nested
    # writer would wait for the outer one.
    key = service.keys(svc).active(KEY_TYPE_FOR_ALGORITHM[sp["signature_algorithm"]])
    persistent_secret = service.persistent_secret(svc)
    code: str | None = None
    if txn.status != "verified" or user is None or device is None:
        code = txn.error_code or "expired"
    elif c.get("broker_subject") and not same_user(c["broker_subject"], user):
        code = "subject_mismatch"
    target = response.Target(
        issuer=service.idp_entity_id(svc),
        acs_url=c["acs_url"],
        in_response_to=c.get("request_id"),
        sign_response=sp["sign_response"],
        sign_assertion=sp["sign_assertion"],
        encrypt_cert=sp.get("encrypt_cert"),
    )
    details = {"sp": c.get("sp_entity_id"), "request_id": c.get("request_id")}
    if code is None:
        # Build and sign first, then claim, recheck and audit in one write: a Response
        # leaves only if that write succeeded.
        with svc.db.read_session() as s:
            attrs = attributes.collect(s, sp["attributes"], user, device)
        spec = assertion.AssertionSpec(
            issuer=target.issuer,
            sp_entity_id=c["sp_entity_id"],
            acs_url=target.acs_url,
            in_response_to=target.in_response_to,
            nameid_format=sp["nameid_format"],
            subject=assertion.Subject(user.id, user.user_name, user.email),
            persistent_secret=persistent_secret,
            session_minutes=sp["session_minutes"],
            attributes=attrs,
            authn_context_class=c.get("authn_context_class"),
        )
        xml = response.success(target, assertion.build(spec), key)
        if complete_verified(
            svc.db.engine,
            txn.id,
            user_id=user.id,
            device_id=device.id,
            action="saml.response",
            details=details,
        ):
            encoded = response.encode(xml)
            return pages.post_form(target.acs_url, encoded, c.get("relay_state"), sp["name"])
        code = _why_not_claimed(svc, txn)
    xml = None
    if code is not None:
        with svc.db.session() as s:
            claimed = s.execute(
                update(LoginTransaction)
                .where(LoginTransaction.id == txn.id, LoginTransaction.completed_at.is_(None))
                .values(completed_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed == 1:
                xml = response.failure(
                    target, (STATUS_RESPONDER, STATUS_AUTHN_FAILED), key, message=code
                )
                audit.record(
                    s,
                    "saml.response",
                    "denied",
                    code=code,
                    user_id=txn.user_id,
                    device_id=txn.device_id,
                    details=details,
                )
    if xml is None:
        finished = SamlError("saml_login_finished", status=409)
        audit.record_separately(
            svc.db, "saml.response", "rejected", code=finished.code, details=details
        )
        return pages.error(finished)
    encoded = response.encode(xml)
    return pages.refused(
        acs_url=target.acs_url,
        saml_response=encoded,
        relay_state=c.get("relay_state"),
        sp_name=sp["name"],
        code=code,
        message=FACTOR_MESSAGES.get(code) or MESSAGES.get(code, "The device check failed."),
        hint=FACTOR_HINTS.get(code) or HINTS.get(code, ""),
    )
