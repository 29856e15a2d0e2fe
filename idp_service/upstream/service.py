"""An upstream sign-in, start to finish: the service half, without Flask.

:func:`begin` records an authorization request bound to a login transaction and
returns the provider's URL; :func:`finish` takes the provider's answer at the
callback. The request is claimed once (its ``state``) before anything else is
done; the code is exchanged with the PKCE verifier; the ID token is checked
(``oidc.py``); its claim is mapped to a SCIM user (:func:`map_user`). Nothing is
created from the ID token: a claim that names nobody, or an inactive person, is
refused with a stable code. Every refusal writes its audit event, and only that.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.directory import groups, users
from idp_service.platform import audit
from idp_service.platform.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    Unavailable,
)
from idp_service.platform.identity import name_key
from idp_service.platform.models import User, utcnow
from idp_service.services import Services
from idp_service.upstream import store
from idp_service.upstream.config import UpstreamIdp, load
from idp_service.upstream.oidc import Provider, TokenRejected, UpstreamFailure

CALLBACK_PATH = "/upstream/callback"
PURPOSES = ("enroll", "reverify", "approve", "admin")
REQUEST_TTL = 600  # seconds an authorization request may take at the provider

# Stable codes of the refusals, with what the person should do next.
UNKNOWN_IDP = "upstream_unknown_idp"
STATE_INVALID = "upstream_state_invalid"
DENIED = "upstream_denied"
UNAVAILABLE = "upstream_unavailable"
TOKEN_INVALID = "upstream_token_invalid"  # noqa: S105 - an error code
UNMAPPED = "upstream_unmapped"
USER_UNKNOWN = "upstream_user_unknown"
USER_INACTIVE = "upstream_user_inactive"


class Refused(Forbidden):
    """An upstream sign-in refused; ``reason`` goes to the audit log only."""

    def __init__(self, code: str, message: str, hint: str, reason: str) -> None:
        super().__init__(code, message, hint)
        self.reason = reason


def _refused(code: str, reason: str) -> Refused:
    messages = {
        STATE_INVALID: (
            "This sign-in answer does not belong to a sign-in started in this browser.",
            "Go back to the application and sign in again.",
        ),
        DENIED: (
            "Your identity provider did not sign you in.",
            "Try again; if it keeps failing, ask IT.",
        ),
        TOKEN_INVALID: (
            "The identity provider's answer could not be verified.",
            "Sign in again. If it keeps failing, tell IT (the audit log says why).",
        ),
        UNMAPPED: (
            "Your identity provider did not say who you are in a way devicetrust can use.",
            "Ask IT to check the upstream IdP's claim mapping.",
        ),
        USER_UNKNOWN: (
            "You signed in, but you are not a user of this organization's device trust.",
            "Ask IT to give you access (your account is provisioned from the directory).",
        ),
        USER_INACTIVE: (
            "Your account is deactivated.",
            "Ask your IT administrator.",
        ),
    }
    message, hint = messages[code]
    return Refused(code, message, hint, reason)


@dataclass
class Registry:
    """The configured upstream IdPs of this process, each as a :class:`Provider`."""

    providers: dict[str, Provider]

    def get(self, idp_id: str) -> Provider:
        """The provider named ``idp_id``, or a ``NotFound``."""
        provider = self.providers.get(idp_id)
        if provider is None:
            raise NotFound(UNKNOWN_IDP, "No such identity provider is configured.")
        return provider

    def console_idp(self) -> str | None:
        """The id of the IdP the admin console's sign-in goes through, if one is set."""
        return next((p.idp.id for p in self.providers.values() if p.idp.console), None)

    def listing(self) -> list[dict[str, str]]:
        """``{"id", "name"}`` of each IdP, for the pages."""
        return [{"id": p.idp.id, "name": p.idp.name} for p in self.providers.values()]


def registry_from(public_url: str, idps: Iterable[UpstreamIdp]) -> Registry:
    """A registry for ``idps``, their callback at ``public_url`` + :data:`CALLBACK_PATH`."""
    redirect = public_url.rstrip("/") + CALLBACK_PATH
    return Registry({idp.id: Provider(idp, redirect) for idp in idps})


def load_registry(public_url: str, path: str) -> Registry:
    """The registry of the IdPs in the file at ``path`` (none when empty)."""
    return registry_from(public_url, load(path))


@dataclass(frozen=True)
class Finished:
    """A successful upstream sign-in: the transaction it serves and whom it proved."""

    txn_id: str
    purpose: str
    user_id: str
    user_name: str
    idp: str


def begin(
    services: Services,
    registry: Registry,
    idp_id: str,
    txn_id: str,
    purpose: str,
    *,
    owned_txns: Iterable[str],
    remote_addr: str | None = None,
) -> str:
    """Record an authorization request for ``txn_id`` and return the provider's URL.

    ``txn_id`` must be one of the login transactions this browser holds
    (``owned_txns``). Every refusal writes its ``upstream.signin`` audit event.
    """
    details: dict[str, Any] = {"idp": idp_id[:64], "stage": "start"}
    try:
        if txn_id not in set(owned_txns):
            raise Refused(
                STATE_INVALID,
                "This sign-in was not started in this browser.",
                "Go back to the application and sign in again.",
                "txn_not_owned",
            )
        if purpose not in PURPOSES:
            raise Invalid("malformed", "Unknown purpose of an upstream sign-in.")
        details["purpose"] = purpose
        provider = registry.get(idp_id)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: within PKCE's 43..128
        try:
            authorization = provider.authorize(state, nonce, verifier)
        except UpstreamFailure as exc:
            details.update(stage="discovery", reason=exc.reason)
            raise Unavailable(
                UNAVAILABLE,
                "The identity provider cannot be reached right now.",
                "Try again in a minute; if it keeps failing, tell IT.",
            ) from None
        with services.db.session() as session:
            txn = store.open_transaction(session, txn_id)
            if txn is None and purpose == "reverify":
                txn = store.reverify_transaction(session, txn_id)
            if txn is None and purpose == "approve":  # a second device waiting for its code
                txn = store.approval_transaction(session, txn_id)
            if txn is None:
                raise Conflict("login_closed", "This sign-in is finished or expired.")
            store.add(
                session,
                state=state,
                idp=idp_id,
                txn_id=txn_id,
                purpose=purpose,
                nonce=nonce,
                code_verifier=verifier,
                expires_at=min(txn.expires_at, utcnow() + dt.timedelta(seconds=REQUEST_TTL)),
            )
        return authorization.url
    except ServiceError as exc:
        reason = getattr(exc, "reason", None) or details.pop("reason", None)
        audit.record_separately(
            services.db,
            "upstream.signin",
            "rejected",
            code=exc.code,
            remote_addr=remote_addr,
            details={**details, **({"reason": reason} if reason else {})},
        )
        raise


def finish(
    services: Services,
    registry: Registry,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    iss: str | None = None,
    owned_txns: Iterable[str],
    remote_addr: str | None = None,
) -> Finished:
    """Check the provider's answer at the callback; raise a :class:`Refused` or return whom.

    The request is claimed (single use) before the code is exchanged, so a
    replayed callback is refused before any work, and the answer counts only in
    the browser whose session holds the transaction. An ``iss`` in the answer
    (RFC 9207) must be the request's provider; one that advertises sending it must.
    """
    details: dict[str, Any] = {}
    try:
        if not state or len(state) > 128:
            raise _refused(STATE_INVALID, "missing")
        with services.db.session() as session:
            row = store.claim(session, state)
            if row is None:
                reason = store.why_unclaimable(session, state)
                session.rollback()
                raise _refused(STATE_INVALID, reason)
            details.update(idp=row.idp, purpose=row.purpose)
            claimed = (row.state_hash, row.idp, row.txn_id, row.purpose)
            nonce, verifier = row.nonce, row.code_verifier
        digest, idp_id, txn_id, purpose = claimed
        if txn_id not in set(owned_txns):
            raise _refused(STATE_INVALID, "other_browser")
        provider = registry.get(idp_id)
        try:
            _check_response_issuer(provider, iss)
            if error or not code or len(code) > 2048:
                raise _refused(DENIED, "provider_error" if error else "no_code")
            id_token = provider.exchange(code, verifier)
            claims = provider.validate(id_token, nonce)
        except UpstreamFailure as exc:
            details["reason"] = exc.reason
            if exc.reason.startswith("token_refused"):
                raise _refused(DENIED, exc.reason) from None
            raise Unavailable(
                UNAVAILABLE,
                "The identity provider cannot be reached right now.",
                "Try again in a minute; if it keeps failing, tell IT.",
            ) from None
        except TokenRejected as exc:
            raise _refused(TOKEN_INVALID, exc.reason) from None
        with services.db.session() as session:
            user = map_user(session, provider.idp, claims)
            store.mark_verified(session, digest, user.id, str(claims.get("sub", "")))
            if purpose == "reverify":
                store.reopen_for_reverify(session, txn_id)
            audit.record(
                session,
                "upstream.signin",
                "ok",
                user_id=user.id,
                remote_addr=remote_addr,
                details={**details, "claim": provider.idp.claim},
            )
            return Finished(txn_id, purpose, user.id, user.user_name, idp_id)
    except ServiceError as exc:
        reason = getattr(exc, "reason", None) or details.pop("reason", None)
        audit.record_separately(
            services.db,
            "upstream.signin",
            "rejected",
            code=exc.code,
            remote_addr=remote_addr,
            details={**details, **({"reason": reason} if reason else {})},
        )
        raise


def _check_response_issuer(provider: Provider, iss: str | None) -> None:
    """RFC 9207: the answer's ``iss`` is the provider this request went to (mix-up defence).

    Every IdP answers at the one callback; a provider that says it sends ``iss``
    must send it, and whoever sends it must name this request's provider exactly.
    """
    metadata = provider.metadata()
    if iss is None:
        if metadata.get("authorization_response_iss_parameter_supported") is True:
            raise _refused(STATE_INVALID, "iss_missing")
    elif iss != str(metadata["issuer"]):
        raise _refused(STATE_INVALID, "iss_mismatch")


def proved_in(services: Services, txn_id: str, purpose: str, user_id: str | None) -> bool:
    """True when an upstream sign-in for ``purpose`` in ``txn_id`` proved ``user_id``."""
    if user_id is None:
        return False
    with services.db.session() as session:
        user = store.verified_user(session, txn_id, purpose)
        return user is not None and user.id == user_id


def map_user(session: Session, idp: UpstreamIdp, claims: dict[str, Any]) -> User:
    """The SCIM user the ID token's claim names (never created here); else a :class:`Refused`.

    ``sub``/``oid`` match ``externalId``; ``email``/``preferred_username`` match
    ``userName`` (an ``email`` the provider marks unverified matches nobody).
    The user must be active, and in the IdP's ``group`` when it names one.
    """
    value = claims.get(idp.claim)
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise _refused(UNMAPPED, f"no_{idp.claim}")
    if idp.claim == "email" and claims.get("email_verified") is False:
        raise _refused(UNMAPPED, "email_unverified")
    user: User | None
    if idp.target == "externalId":
        found = session.scalars(
            select(User).where(User.external_id == value, User.deleted_at.is_(None)).limit(2)
        ).all()
        if len(found) > 1:
            raise _refused(UNMAPPED, "ambiguous")
        user = found[0] if found else None
    else:
        user = users.find(session, value)
    if user is None or user.deleted_at is not None:
        raise _refused(USER_UNKNOWN, "not_provisioned")
    if not user.active:
        raise _refused(USER_INACTIVE, "inactive")
    if idp.group and name_key(idp.group) not in groups.group_keys_of(session, user.id):
        raise _refused(USER_UNKNOWN, "not_in_group")
    return user
