"""Turning a finished login transaction into exactly one SAML Response.

Registered as ``login.LOGIN_COMPLETERS["saml"]``. ``/login/<txn>/continue``
calls it with the transaction (``verified``: the device was trusted and its
owner active, rechecked just now; or ``denied`` with a reason). The completer:

* uses the SP's settings as they were when the request was accepted (frozen in
  the transaction's context), so it reads nothing from the registry;
* claims the transaction with a conditional ``UPDATE ... SET completed_at``:
  only the first call issues anything, a second gets an error page;
* in factor mode (``identity_broker`` SP) refuses unless the device's owner is
  the user the broker named in its signed request;
* on success returns the auto-POST form carrying the signed Response;
* otherwise returns a page that says why, with a button that takes a
  ``Responder/AuthnFailed`` Response to the SP.
"""

from __future__ import annotations

from flask import Response
from sqlalchemy import update

from idp_service import audit
from idp_service.blueprints.login import MESSAGES
from idp_service.context import ctx
from idp_service.errors import HINTS
from idp_service.saml import assertion, attributes, pages, response, service
from idp_service.saml.constants import (
    KEY_TYPE_FOR_ALGORITHM,
    STATUS_AUTHN_FAILED,
    STATUS_RESPONDER,
)
from idp_service.saml.errors import SamlError
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
    with svc.db.session() as s:
        claimed = s.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id == txn.id, LoginTransaction.completed_at.is_(None))
            .values(completed_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            xml = None
        elif code is None:
            spec = assertion.AssertionSpec(
                issuer=target.issuer,
                sp_entity_id=c["sp_entity_id"],
                acs_url=target.acs_url,
                in_response_to=target.in_response_to,
                nameid_format=sp["nameid_format"],
                subject=assertion.Subject(user.id, user.user_name, user.email),
                persistent_secret=persistent_secret,
                session_minutes=sp["session_minutes"],
                attributes=attributes.collect(s, sp["attributes"], user, device),
            )
            xml = response.success(target, assertion.build(spec), key)
            audit.record(
                s, "saml.response", "ok", user_id=user.id, device_id=device.id, details=details
            )
        else:
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
    if code is None:
        return pages.post_form(target.acs_url, encoded, c.get("relay_state"), sp["name"])
    return pages.refused(
        acs_url=target.acs_url,
        saml_response=encoded,
        relay_state=c.get("relay_state"),
        sp_name=sp["name"],
        code=code,
        message=FACTOR_MESSAGES.get(code) or MESSAGES.get(code, "The device check failed."),
        hint=FACTOR_HINTS.get(code) or HINTS.get(code, ""),
    )
