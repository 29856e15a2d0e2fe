"""Turning a finished login transaction into exactly one SAML Response.

:func:`complete` is the SAML surface's half of the sign-in; ``saml/web.py``
registers it as the ``saml`` completer (``Services.completers``) and renders the
:class:`Outcome` it returns (``saml/pages.py``). ``/login/<txn>/continue``
calls it with the transaction (``verified``: the device was trusted and its
owner active, rechecked just now; or ``denied`` with a reason). The completer:

* uses the SP's settings as they were when the request was accepted (frozen in
  the transaction's context), so it reads nothing from the registry;
* builds and signs the Response, then claims the transaction with one
  conditional write (``signin/store.complete_verified``) that also rechecks,
  in the same statement, that the device is still trusted and its owner active,
  and records the audit event: only the first call issues anything, and a
  revocation committed before the claim wins;
* stores the encoded Response it issued (success or refusal) in the same write
  as the claim (``saml_issued_responses``), so that a *repeated* ``/continue``
  from the browser that owns the transaction (the page navigated twice, a
  reload, a slow network) gets the very same Response, RelayState and auto-POST
  form again -- never a new assertion -- until the Response's validity ends (the
  assertion's ``NotOnOrAfter``, no later than the transaction's expiry); after
  that, or when nothing was stored, a page that says the sign-in is finished.
  Replay protection at the ACS stays the SP's job;
* in factor mode (``identity_broker`` SP) refuses unless the device's owner is
  the user the broker named in its signed request;
* on success returns an outcome for the auto-POST form carrying the signed Response;
* otherwise one for a page that says why, with a button that takes a
  ``Responder/AuthnFailed`` Response to the SP.

Every write goes through ``signin/store.py`` (the success claim) and
``saml/store.py`` (the refusal claim and the stored Responses); this module
imports no web framework.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from lxml import etree

from idp_service.platform import audit
from idp_service.platform.errors import HINTS
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.saml import attributes, service
from idp_service.saml import store as saml_store
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import assertion, response
from idp_service.saml.protocol.constants import (
    KEY_TYPE_FOR_ALGORITHM,
    STATUS_AUTHN_FAILED,
    STATUS_RESPONDER,
)
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.signin.messages import MESSAGES
from idp_service.signin.service import still_trusted, why_not_claimed
from idp_service.signin.store import complete_verified


@dataclass(frozen=True)
class Outcome:
    """What the browser gets, for the web layer to render (``saml/web.py``).

    ``post``: the auto-POST form carrying ``saml_response`` to ``acs_url``.
    ``refused``: why the sign-in was refused (``code``, ``message``, ``hint``), with a
    button that takes the failure ``saml_response`` to ``acs_url``.
    ``error``: an error page for ``error``; nothing goes to any SP.
    """

    kind: Literal["post", "refused", "error"]
    acs_url: str = ""
    saml_response: str = ""
    relay_state: str | None = None
    sp_name: str = ""
    code: str = ""
    message: str = ""
    hint: str = ""
    error: SamlError | None = None


FACTOR_MESSAGES = {
    "subject_mismatch": "This device belongs to a different user than the one the "
    "application asked devicetrust to verify.",
}
FACTOR_HINTS = {
    "subject_mismatch": "Sign in to the application as the owner of this device, "
    "or use your own device.",
}


def _not_on_or_after(element: etree._Element) -> dt.datetime:
    """The earliest ``NotOnOrAfter`` in an assertion (its conditions and confirmations)."""
    found = [
        dt.datetime.fromisoformat(value)
        for e in element.iter()
        if isinstance(e.tag, str) and (value := e.get("NotOnOrAfter"))
    ]
    return min(found) if found else dt.datetime.now(dt.UTC) + assertion.LIFETIME


def _refused(target_acs: str, encoded: str, c: dict[str, Any], code: str) -> Outcome:
    return Outcome(
        "refused",
        acs_url=target_acs,
        saml_response=encoded,
        relay_state=c.get("relay_state"),
        sp_name=c["sp"]["name"],
        code=code,
        message=FACTOR_MESSAGES.get(code) or MESSAGES.get(code, "The device check failed."),
        hint=FACTOR_HINTS.get(code) or HINTS.get(code, ""),
    )


def _deliver_again(
    svc: Services, txn: LoginTransaction, user: User | None, device: Device | None
) -> Outcome:
    """A completed transaction: the Response it issued, again, while that is still valid.

    Only reached for a transaction this browser owns (``login.owned_login``). Never
    builds or signs anything: the stored bytes go out as they are. A success is not
    delivered again once the device is no longer trusted or its owner is inactive
    (``user``/``device`` as read for this request). Writes nothing but the audit
    event (and drops a stored Response found past its validity).
    """
    c = txn.context or {}
    details = {"sp": c.get("sp_entity_id"), "request_id": c.get("request_id")}
    encoded: str | None = None
    code: str | None = None
    with svc.db.session() as s:
        row = saml_store.issued(s, txn.id)
        if row is not None and row.valid_until <= svc.clock():
            # Past its validity: nobody may use it any more.
            saml_store.drop_issued(s, txn.id)
        elif row is not None and (row.code is not None or still_trusted(user, device)):
            encoded, code = row.saml_response, row.code
        if encoded is not None:
            audit.record(
                s,
                "saml.response",
                "redelivered",
                code=code,
                user_id=txn.user_id,
                device_id=txn.device_id,
                details=details,
            )
        else:
            finished = SamlError("saml_login_finished", status=409)
            audit.record(s, "saml.response", "rejected", code=finished.code, details=details)
            return Outcome("error", error=finished)
    if code is None:
        return _post(c["acs_url"], encoded, c.get("relay_state"), c["sp"]["name"])
    return _refused(c["acs_url"], encoded, c, code)


def _post(acs_url: str, encoded: str, relay_state: str | None, sp_name: str) -> Outcome:
    return Outcome(
        "post", acs_url=acs_url, saml_response=encoded, relay_state=relay_state, sp_name=sp_name
    )


def complete(
    svc: Services, txn: LoginTransaction, user: User | None, device: Device | None
) -> Outcome:
    """Issue the one Response this transaction is allowed (see the module doc)."""
    c = txn.context or {}
    sp = c.get("sp")
    if not sp or not c.get("acs_url"):
        exc = SamlError("saml_malformed", "not a SAML sign-in", status=400)
        audit.record_separately(svc.db, "saml.response", "rejected", code=exc.code)
        return Outcome("error", error=exc)
    if txn.completed_at is not None:
        return _deliver_again(svc, txn, user, device)
    # Load (or create) shared material before the write transaction: on SQLite a nested
    # writer would wait for the outer one.
    key = service.keys(svc).active(KEY_TYPE_FOR_ALGORITHM[sp["signature_algorithm"]])
    persistent_secret = service.persistent_secret(svc)
    code: str | None = None
    if txn.status != "verified" or user is None or device is None:
        code = txn.error_code or "expired"
    elif c.get("broker_subject") and not transactions.same_user(c["broker_subject"], user):
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
        assert user is not None and device is not None  # no code: a verified sign-in
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
        built = assertion.build(spec)
        valid_until = min(_not_on_or_after(built), txn.expires_at)
        encoded = response.encode(response.success(target, built, key))
        if complete_verified(
            svc.db.engine,
            txn.id,
            user_id=user.id,
            device_id=device.id,
            action="saml.response",
            details=details,
            issued=(encoded, valid_until),
        ):
            return _post(target.acs_url, encoded, c.get("relay_state"), sp["name"])
        code = why_not_claimed(svc, txn)
        if code is None:  # another request for this transaction completed it just now
            return _deliver_again(svc, txn, user, device)
    xml = None
    if code is not None:
        with svc.db.session() as s:
            if saml_store.claim(s, txn.id, svc.clock()):
                xml = response.failure(
                    target, (STATUS_RESPONDER, STATUS_AUTHN_FAILED), key, message=code
                )
                saml_store.keep_issued(
                    s,
                    txn.id,
                    response.encode(xml),
                    code=code,
                    valid_until=min(svc.clock() + assertion.LIFETIME, txn.expires_at),
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
    if xml is None:  # another request for this transaction completed it just now
        return _deliver_again(svc, txn, user, device)
    return _refused(target.acs_url, response.encode(xml), c, code)
