"""The login page's flows for devices that are not (yet) trusted.

* **Enroll from the page.** When the agent is not enrolled, or this service does
  not know the device, the page asks for a ``register`` challenge bound to its
  login transaction (:func:`issue_register_challenge`) and hands it, with the
  code the person typed, to the local agent (``POST /v1/enroll``). The agent
  enrolls only with its own service (``agent/page_enroll.py``) and sends the code
  inside the sealed response to ``/agent/v1/register`` (``idp_service/devices/enroll.py``).
  The code never reaches this service any other way: not in a URL, a form
  field or a log.
* **Register by the broker's word (factor-mode TOFU).** When an identity broker
  (Okta, Entra ID) sent a *signed* AuthnRequest naming the user, and that user
  exists, is active and has no device at all, the page may register this device
  without a code: the challenge is bound ``tofu:<txn>`` and the registration
  binds the device to that user (:func:`broker_user`). Otherwise the normal rule
  applies: an enrollment code from IT.
* **Register after an upstream sign-in.** When the person signed in to the
  organization's OpenID Connect IdP from this sign-in (``idp_service/upstream/``),
  the page may register the device to the SCIM user that sign-in proved, without
  a code: the challenge is bound ``upstream:<txn>`` (:func:`upstream_user`). The
  registration policy then applies as to any new device (TOFU, admin approval,
  trusted-device approval).
* **Waiting for approval.** A device that waits for approval denies the
  transaction with ``device_pending``; :func:`reopen_pending` lets the page check
  again in the same sign-in, as long as nothing was sent to the application yet.

Register challenges are bound ``enroll:<txn>`` (with a code), ``tofu:<txn>``
(broker) or ``upstream:<txn>`` (upstream sign-in), never ``login:<txn>``: consuming one
must never count as signing in.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from idp_service.devices import challenges
from idp_service.directory import users
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Forbidden, Invalid
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.upstream import store as upstream_store
from trust_protocol.challenge import Challenge

REGISTER_CALLBACK = "/agent/v1/register"
CODE_PREFIX = "enroll:"
TOFU_PREFIX = "tofu:"
UPSTREAM_PREFIX = "upstream:"
MODES = {"code": CODE_PREFIX, "tofu": TOFU_PREFIX, "upstream": UPSTREAM_PREFIX}

TOFU_MESSAGE = "This device cannot be registered without a code for this sign-in."
TOFU_HINT = "Enter the enrollment code from IT. If you have none, ask IT for one."


class TofuUnavailable(Forbidden):
    """The broker's subject does not qualify for TOFU; ``reason`` goes to the audit log only."""

    def __init__(self, reason: str) -> None:
        super().__init__("tofu_unavailable", TOFU_MESSAGE, TOFU_HINT)
        self.reason = reason


def register_binding(mode: str, txn_id: str) -> str:
    """The binding of a register challenge issued to the login page."""
    return MODES[mode] + txn_id


def tofu_txn_id(binding: str) -> str | None:
    """The transaction a broker-TOFU register challenge names, or None for other bindings."""
    return binding[len(TOFU_PREFIX) :] if binding.startswith(TOFU_PREFIX) else None


def broker_user(session: Session, txn: LoginTransaction, *, lock: bool = False) -> User:
    """The user the broker vouched for in ``txn``, if TOFU applies; else :class:`TofuUnavailable`.

    TOFU applies when the transaction carries a broker's *signed* subject
    (:func:`~idp_service.signin.transactions.tofu_subject`), the subject names exactly one user (by
    userName, else by e-mail; as the completer will match it), and that user is
    active and has no device in any state. With ``lock`` the user's row is
    locked first (PostgreSQL), so two concurrent registrations cannot both see
    "no device yet"; on SQLite the caller's earlier write serialises them.
    """
    subject = (transactions.tofu_subject(txn) or "").strip()
    if not subject:
        raise TofuUnavailable("no_broker_subject")
    user = users.find(session, subject)
    if user is None:
        matches = session.scalars(
            select(User).where(func.lower(User.email) == subject.lower()).limit(2)
        ).all()
        user = matches[0] if len(matches) == 1 else None
    if user is None or not transactions.same_user(subject, user):
        raise TofuUnavailable("unknown_user")
    if lock:
        user = session.execute(
            select(User)
            .where(User.id == user.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
    if not user.active:
        raise TofuUnavailable("owner_inactive")
    has_device = session.execute(
        select(Device.id).where(Device.user_id == user.id).limit(1)
    ).first()
    if has_device is not None:
        raise TofuUnavailable("has_device")
    return user


def upstream_txn_id(binding: str) -> str | None:
    """The transaction an upstream-sign-in register challenge names, or None for other bindings."""
    return binding[len(UPSTREAM_PREFIX) :] if binding.startswith(UPSTREAM_PREFIX) else None


class UpstreamUnavailable(Forbidden):
    """No upstream sign-in in this transaction proved an active user."""

    def __init__(self) -> None:
        super().__init__(
            "upstream_required",
            "Sign in with your organization's identity provider first.",
            "Use the sign-in button on this page, or enter an enrollment code from IT.",
        )


def upstream_user(session: Session, txn: LoginTransaction, *, lock: bool = False) -> User:
    """The active SCIM user an upstream sign-in proved within ``txn``; else ``upstream_required``.

    With ``lock`` the user's row is locked (PostgreSQL), so the registration
    policy's count of trusted devices is read under the lock.
    """
    user = upstream_store.verified_user(session, txn.id, "enroll")
    if user is None:
        raise UpstreamUnavailable()
    if lock:
        user = session.execute(
            select(User)
            .where(User.id == user.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
        if not user.active:
            raise UpstreamUnavailable()
    return user


def open_transaction(session: Session, txn_id: str) -> LoginTransaction:
    """The transaction a register challenge names, if it can still be signed in to."""
    txn = session.get(LoginTransaction, txn_id)
    if not transactions.is_open(txn):
        raise Conflict("login_closed", "This sign-in is finished or expired.")
    return txn  # type: ignore[return-value]  # is_open: not None


def tofu_offer(service: Services, txn: LoginTransaction) -> dict[str, str] | None:
    """``{"user": ...}`` when this sign-in may register a device without a code, else None.

    After an upstream sign-in in this transaction, ``{"user": ..., "mode": "upstream"}``.
    """
    with service.db.session() as session:
        proved = upstream_store.verified_user(session, txn.id, "enroll")
        if proved is not None:
            return {"user": proved.user_name, "mode": "upstream"}
    if not (txn.context or {}).get("tofu_subject"):
        return None  # the common case costs no query
    with service.db.session() as session:
        try:
            user = broker_user(session, txn)
        except TofuUnavailable:
            return None
        return {"user": user.user_name}


def issue_register_challenge(
    service: Services, txn: LoginTransaction, mode: str, *, remote_addr: str | None = None
) -> tuple[str, Challenge]:
    """A ``register`` challenge for this sign-in's page (writes nothing but a refusal's audit).

    ``mode`` is ``code`` (the agent adds the enrollment code) or ``tofu`` (the
    broker's subject stands for the code; refused unless :func:`broker_user`
    accepts it now, with an audit event; it is checked again at registration).
    """
    if mode not in MODES:
        raise Invalid("malformed", 'send {"mode": "code"} or {"mode": "tofu"}')
    if not transactions.is_open(txn):
        raise Conflict("login_closed", "This sign-in is finished or expired.")
    if mode == "upstream":
        try:
            with service.db.session() as session:
                upstream_user(session, txn)
        except UpstreamUnavailable as exc:
            audit.record_separately(
                service.db,
                "device.register",
                "rejected",
                code=exc.code,
                remote_addr=remote_addr,
                details={"method": "upstream", "stage": "challenge"},
            )
            raise
    if mode == "tofu":
        try:
            with service.db.session() as session:
                broker_user(session, txn)
        except TofuUnavailable as exc:
            audit.record_separately(
                service.db,
                "device.register",
                "rejected",
                code=exc.code,
                remote_addr=remote_addr,
                details={"method": "broker", "reason": exc.reason, "stage": "challenge"},
            )
            raise
    return challenges.issue(
        service, "register", register_binding(mode, txn.id), callback_path=REGISTER_CALLBACK
    )


def reopen_pending(service: Services, txn_id: str) -> bool:
    """Let a sign-in refused only because the device waits for approval try again.

    Moves the transaction from ``denied``/``device_pending`` back to ``pending``
    when it has not expired and nothing was sent to the application yet
    (``completed_at`` is empty). Returns whether it did. Safe to repeat: the
    next answer from a device still waiting denies it again.
    """
    with service.db.session() as session:
        result = session.execute(
            update(LoginTransaction)
            .where(
                LoginTransaction.id == txn_id,
                LoginTransaction.status == "denied",
                LoginTransaction.error_code == "device_pending",
                LoginTransaction.completed_at.is_(None),
                LoginTransaction.expires_at > service.clock(),
            )
            .values(status="pending", error_code=None, device_id=None, user_id=None)
            .execution_options(synchronize_session=False)
        )
        changed: int = cast("CursorResult[Any]", result).rowcount
    return changed == 1


__all__ = [
    "CODE_PREFIX",
    "TOFU_PREFIX",
    "TofuUnavailable",
    "UpstreamUnavailable",
    "broker_user",
    "issue_register_challenge",
    "open_transaction",
    "register_binding",
    "reopen_pending",
    "tofu_offer",
    "tofu_txn_id",
    "upstream_txn_id",
    "upstream_user",
]
