"""Turning a finished login transaction into exactly one code or id_token.

:func:`complete` is the OpenID Connect surface's half of the sign-in;
``oidc/web.py`` registers it as the ``oidc`` completer and renders the
:class:`Outcome`. ``/login/<txn>/continue`` calls it once the transaction is
verified (device trusted, owner active, posture allowed, rechecked just now)
or denied with a reason. The completer

* refuses with an error page, sending nothing to the client, when the client was
  disabled or removed, or its redirect URI withdrawn, since the authorize request;
* in factor mode refuses unless the device's owner is the user the caller
  named: for Entra EAM the user the verified ``id_token_hint`` maps to, for
  Okta's IdP authenticator the ``login_hint`` (``subject_mismatch``);
* builds the claims (the client's mapping frozen in the transaction), then
  claims the transaction with one conditional write that rechecks the device
  and its owner and audits (``signin/store.complete_verified``): only the first
  call issues anything, and a revocation committed before it wins;
* code flow: stores the code (hash, 60 s, single use) with the claims the
  token endpoint will sign, and redirects (or form-posts) it with ``state``;
* EAM (``response_type=id_token``): signs the id_token (``sub`` is the hint's
  ``sub``, ``nonce`` echoed, one ``acr``, ``amr`` of one value) and form-posts
  it with ``state`` to the redirect URI;
* a refusal goes back as ``error=access_denied`` with the stable code as
  ``error_description`` (and ``state``), behind a page that says why.

A repeated ``/continue`` of a completed transaction issues nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from idp_service.directory.groups import groups_of
from idp_service.oidc import service, store
from idp_service.oidc.tables import OidcCode
from idp_service.platform import audit
from idp_service.platform.errors import HINTS
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.posture.service import summary_for_device
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.signin.messages import MESSAGES
from idp_service.signin.service import why_not_claimed
from idp_service.signin.store import complete_verified

FACTOR_MESSAGES = {
    "subject_mismatch": "This device belongs to a different user than the one the "
    "application asked devicetrust to verify.",
}
FACTOR_HINTS = {
    "subject_mismatch": "Sign in to the application as the owner of this device, "
    "or use your own device.",
}


@dataclass(frozen=True)
class Outcome:
    """What the browser gets (``oidc/web.py`` renders it).

    ``redirect``: a 303 to ``url``. ``post``: an auto-POST form of ``fields`` to
    ``url``. ``refused``: a page saying why (``code``, ``message``, ``hint``) with a
    button that takes ``fields`` (the OAuth error) to ``url`` by ``method``.
    ``finished``: the sign-in was completed already, or the client can no longer be
    answered (disabled, removed, its redirect URI withdrawn); nothing goes anywhere.
    """

    kind: Literal["redirect", "post", "refused", "finished"]
    url: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    method: str = "get"
    client_name: str = ""
    code: str = ""
    message: str = ""
    hint: str = ""


def _with_state(c: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    if c.get("state") is not None:
        values["state"] = c["state"]
    return values


def _deliver(c: dict[str, Any], values: dict[str, str]) -> Outcome:
    fields = _with_state(c, values)
    if c["response_mode"] == "form_post":
        return Outcome("post", url=c["redirect_uri"], fields=fields, client_name=c["sp_name"])
    from urllib.parse import urlencode

    url = c["redirect_uri"] + ("&" if "?" in c["redirect_uri"] else "?") + urlencode(fields)
    return Outcome("redirect", url=url, client_name=c["sp_name"])


def _refused(c: dict[str, Any], code: str) -> Outcome:
    fields = _with_state(c, {"error": "access_denied", "error_description": code})
    return Outcome(
        "refused",
        url=c["redirect_uri"],
        fields=fields,
        method="post" if c["response_mode"] == "form_post" else "get",
        client_name=c["sp_name"],
        code=code,
        message=FACTOR_MESSAGES.get(code) or MESSAGES.get(code, "The device check failed."),
        hint=FACTOR_HINTS.get(code) or HINTS.get(code, ""),
    )


def _claims(
    svc: Services, c: dict[str, Any], user: User, device: Device, auth_time: int
) -> dict[str, Any]:
    """``{"id_token": claims, "userinfo": claims}`` for this sign-in."""
    client = c["client"]
    hint = c.get("hint")
    amr = service.device_amr()
    if hint is not None:  # Entra EAM: exactly what the reference asks for, nothing else
        id_claims = service.id_token_claims(
            svc,
            client=client,
            sub=hint["sub"],
            nonce=c.get("nonce"),
            auth_time=auth_time,
            amr=amr,
            extra={},
        )
        return {"id_token": id_claims, "userinfo": {"sub": hint["sub"]}}
    mapping: dict[str, str] = client["claims"]
    extra: dict[str, Any] = {"preferred_username": user.user_name}
    with svc.db.read_session() as s:
        for source, name in mapping.items():
            if source == "email":
                extra[name] = user.email or user.user_name
            elif source == "name" and user.display_name:
                extra[name] = user.display_name
            elif source == "groups":
                extra[name] = [str(g) for g in groups_of(s, user.id)]
            elif source == "device_id":
                extra[name] = device.id
            elif source == "posture":
                extra[name] = summary_for_device(s, device.id).get("posture", "unknown")
    id_claims = service.id_token_claims(
        svc,
        client=client,
        sub=user.id,
        nonce=c.get("nonce"),
        auth_time=auth_time,
        amr=amr,
        extra=extra,
    )
    return {"id_token": id_claims, "userinfo": {"sub": user.id, **extra}}


def _client_gone(svc: Services, c: dict[str, Any]) -> str | None:
    """Why the client may no longer be answered, or None: the registry as it is now wins
    over the snapshot taken at authorize (an administrator disabled it, or withdrew the URI)."""
    client_id = (c.get("client") or {}).get("client_id")
    with svc.db.read_session() as s:
        row = store.get_client(s, client_id) if isinstance(client_id, str) else None
        if row is None:
            return "oidc_unknown_client"
        if not row.enabled:
            return "oidc_client_disabled"
        if c.get("redirect_uri") not in list(row.redirect_uris):
            return "oidc_redirect_uri_mismatch"
    return None


def _deny(svc: Services, txn: LoginTransaction, code: str, details: dict[str, Any]) -> None:
    """Audit the refusal, and mark a verified transaction denied (one transaction)."""
    with svc.db.session() as s:
        audit.record(
            s,
            "oidc.authorize",
            "denied",
            code=code,
            user_id=txn.user_id,
            device_id=txn.device_id,
            details=details,
        )
        if txn.status == "verified":
            transactions.mark_denied(
                s, txn.id, code=code, device_id=txn.device_id, user_id=txn.user_id
            )


def _mismatch(c: dict[str, Any], user: User) -> bool:
    if c.get("broker_user_id"):
        return bool(c["broker_user_id"] != user.id)
    subject = c.get("broker_subject")
    return isinstance(subject, str) and bool(subject) and not transactions.same_user(subject, user)


def complete(
    svc: Services, txn: LoginTransaction, user: User | None, device: Device | None
) -> Outcome:
    """Issue the one answer this transaction is allowed (module doc)."""
    c = txn.context or {}
    details = {"client_id": (c.get("client") or {}).get("client_id")}
    if txn.completed_at is not None:
        audit.record_separately(
            svc.db, "oidc.authorize", "rejected", code="oidc_login_finished", details=details
        )
        return Outcome("finished", code="oidc_login_finished", client_name=c.get("sp_name", ""))
    gone = _client_gone(svc, c)
    if gone is not None:  # disabled, removed, or its redirect URI withdrawn since authorize
        _deny(svc, txn, gone, details)
        return Outcome("finished", code=gone, client_name=c.get("sp_name", ""))
    code: str | None = None
    if txn.status != "verified" or user is None or device is None:
        code = txn.error_code or "expired"
    elif _mismatch(c, user):
        code = "subject_mismatch"
    if code is None:
        assert user is not None and device is not None
        auth_time = int((txn.verified_at or svc.clock()).timestamp())
        claims = _claims(svc, c, user, device, auth_time)
        if c["response_type"] == "id_token":
            answer = {"id_token": service.sign(svc, claims["id_token"])}
        else:
            secret = service.new_secret()
            answer = {"code": secret}
        if complete_verified(
            svc.db.engine,
            txn.id,
            user_id=user.id,
            device_id=device.id,
            action="oidc.authorize",
            details=details,
        ):
            if "code" in answer:
                now = svc.clock()
                with svc.db.session() as s:
                    store.add_code(
                        s,
                        OidcCode(
                            code_hash=service.digest(answer["code"]),
                            client_id=c["client"]["client_id"],
                            txn_id=txn.id,
                            redirect_uri=c["redirect_uri"],
                            code_challenge=c.get("code_challenge"),
                            claims=claims,
                            scope=c.get("scope") or "openid",
                            user_id=user.id,
                            device_id=device.id,
                            issued_at=now,
                            expires_at=now + service.CODE_LIFETIME,
                        ),
                    )
            return _deliver(c, answer)
        code = why_not_claimed(svc, txn)
        if code is None:
            return Outcome("finished", code="oidc_login_finished", client_name=c.get("sp_name", ""))
    _deny(svc, txn, code, details)
    return _refused(c, code)
