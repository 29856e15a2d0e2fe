"""The sign-in's rules, without the web: where a login transaction stands, and what
``/continue`` may do with it.

The login page (``signin/web.py``) reads the request, checks that the browser
owns the transaction, calls these functions and renders what they return. They
decide from the database and the clock, never from the request:

* :func:`start`, :func:`transaction` and :func:`login` create and read a
  transaction (a pending one is *settled*: a verified answer recorded by the
  agent's direct callback is copied onto it);
* :func:`status` says where it stands (an open transaction past its expiry is
  ``denied``/``expired``) and whether its device may be approved with a code;
* :func:`decide_continue` is the last moment before a surface issues anything:
  the browser check (a verified transaction continues only in the browser that
  fetched the answered challenge, :func:`holder_ok`), the trust recheck (a
  revocation since verification wins), then the posture gate (a blocking check
  holds the sign-in on a page; cancelling denies it; warnings are shown once).
  It returns a :class:`Continue` outcome.

A surface finishes the sign-in through its completer (``Services.completers``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from idp_service.devices import approve
from idp_service.directory.groups import groups_of
from idp_service.platform import audit, metrics
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.posture.service import LoginPosture, Posture
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.signin.reads import read_login, read_transaction
from posture_checks.enforcement import Action

Login = tuple[LoginTransaction, User | None, Device | None]


@dataclass(frozen=True)
class Status:
    """Where a transaction stands, as the page's script polls it."""

    status: str  # pending, verified or denied
    code: str | None  # why it was denied (a stable code), if it was
    approve_url: str | None = None  # where to type an approval code, when the device can


@dataclass(frozen=True)
class Continue:
    """What ``/continue`` does with a transaction.

    ``wait``: still pending, back to the login page. ``elsewhere``: refused (and
    audited), it was answered for another browser (``code``). ``posture``: show the
    posture page (``blocked``: 403 with "Recheck now"; else the warnings, 200).
    ``complete``: hand it to its surface's completer (``txn`` carries the outcome
    of the recheck and the gate: verified, or denied with a code).
    """

    action: Literal["wait", "elsewhere", "posture", "complete"]
    txn: LoginTransaction
    user: User | None = None
    device: Device | None = None
    verdict: LoginPosture | None = None
    blocked: bool = False
    code: str | None = None

    @property
    def kind(self) -> str:
        """The surface that started the transaction (``local`` if none said)."""
        kind: str = (self.txn.context or {}).get("kind", "local")
        return kind


def start(services: Services, kind: str, context: dict[str, Any] | None = None) -> str:
    """Create a transaction started by surface ``kind``; returns its id."""
    with services.db.session() as s:
        return transactions.create(
            s, ttl_seconds=services.settings.login_ttl, context={"kind": kind, **(context or {})}
        )


def transaction(services: Services, txn_id: str, *, settle: bool = True) -> LoginTransaction | None:
    """The transaction (one statement), or None. A pending one is settled unless ``settle``
    is False; answers recorded by ``authenticate.verify`` already verified their
    transaction in the same write."""
    txn = read_transaction(services.db.engine, txn_id)
    if txn is not None and settle and txn.status == "pending":
        with services.db.session() as s:
            txn = transactions.settle(s, txn)
    return txn


def login(services: Services, txn_id: str) -> Login | None:
    """The transaction with its user and device as they are now (detached snapshots), or
    None. A pending one is settled first."""
    db = services.db
    found = read_login(db.engine, txn_id)
    if found is not None and found[0].status == "pending":
        with db.session() as s:
            settled = transactions.settle(s, found[0])
        if settled.status != "pending":
            found = read_login(db.engine, txn_id)
    return found


def is_open(services: Services, txn: LoginTransaction | None) -> bool:
    """Whether the transaction may still get a challenge (pending, not expired)."""
    return transactions.is_open(txn, now=services.clock())


def waiting_device(txn: LoginTransaction) -> str | None:
    """The device of a sign-in refused only because it waits for approval, else None."""
    if txn.status == "denied" and txn.error_code == "device_pending" and txn.device_id:
        return txn.device_id
    return None


def approval_open(services: Services, txn: LoginTransaction) -> bool:
    """Whether this sign-in's waiting device has an open approval request."""
    device_id = waiting_device(txn)
    if device_id is None:
        return False
    with services.db.session() as s:
        return approve.open_for_device(s, device_id) is not None


def approve_url(services: Services, txn: LoginTransaction) -> str | None:
    """Where the login page asks for the code, when this sign-in's device can use one."""
    return f"/login/{txn.id}/approve" if approval_open(services, txn) else None


def status(services: Services, txn: LoginTransaction) -> Status:
    """Where a (settled) transaction stands; an open one past its expiry is denied/expired."""
    state, code = txn.status, txn.error_code
    if state == "pending" and not is_open(services, txn):
        state, code = "denied", "expired"
    return answered(services, txn.id, state, code)


def answered(services: Services, txn_id: str, state: str, code: str | None) -> Status:
    """The status a write just reported (``authenticate.verify``), with its approval link."""
    url = None
    if code == "device_pending":
        txn = read_transaction(services.db.engine, txn_id)
        url = approve_url(services, txn) if txn is not None else None
    return Status(state, code, url)


def holder_ok(
    services: Services, txn_id: str, secret_key: bytes | str, sent: Sequence[str]
) -> bool:
    """True unless the transaction was verified by a challenge whose holder secret is not
    among ``sent`` (the browser's holder cookie; every one is compared, in constant time)."""
    with services.db.session() as s:
        answered_id = transactions.answered_challenge(s, txn_id)
    if answered_id is None:
        return True  # nothing verified, nothing to hand over
    expected = transactions.holder_secret(secret_key, answered_id).encode()
    found = False
    for holder in sent:  # no early exit: every kept holder is compared
        found |= hmac.compare_digest(holder.encode(), expected)
    return found


def _refuse_elsewhere(services: Services, txn: LoginTransaction, remote_addr: str | None) -> str:
    """Audit a ``/continue`` from a browser that did not fetch the answered challenge."""
    code = "login_elsewhere"
    audit.record_separately(
        services.db,
        "login.continue",
        "rejected",
        code=code,
        user_id=txn.user_id,
        device_id=txn.device_id,
        remote_addr=remote_addr,
        details={"kind": (txn.context or {}).get("kind", "local")},
    )
    return code


def decide_continue(
    services: Services,
    login_: Login,
    *,
    choice: str | None,
    secret_key: bytes | str,
    holders: Sequence[str],
    remote_addr: str | None,
) -> Continue:
    """What ``/continue`` does with a transaction this browser owns (module doc).

    ``holders`` are the browser's challenge holder secrets (:func:`holder_ok`,
    under ``secret_key``); ``choice`` is the posture page's button (``continue``
    past warnings, ``cancel`` a blocked sign-in), None otherwise. A transaction
    completed already goes straight to its completer, which answers a repeat
    without issuing anything new.
    """
    txn, user, device = login_
    if txn.status == "pending" and is_open(services, txn):
        return Continue("wait", txn, user, device)
    if not holder_ok(services, txn.id, secret_key, holders):
        code = _refuse_elsewhere(services, txn, remote_addr)
        return Continue("elsewhere", txn, code=code)
    if txn.completed_at is not None:
        return Continue("complete", txn, user, device)
    with services.db.session() as s:
        if txn.status == "verified" and not still_trusted(user, device):
            # Recheck at the last moment (user and device were read just now): a revocation
            # since verification wins. The SAML completer checks again in its claim.
            code = untrusted_code(user, device)
            transactions.mark_denied(
                s, txn.id, code=code, device_id=txn.device_id, user_id=txn.user_id
            )
            txn.status, txn.error_code = "denied", code
        if txn.status == "verified" and user is not None and device is not None:
            held = _posture_gate(services, s, txn, user, device, choice)
            if held is not None:
                return held
    done = Continue("complete", txn, user, device)
    if txn.status == "verified":
        metrics.signin_duration(done.kind, metrics.age(txn.created_at))
    return done


def still_trusted(user: User | None, device: Device | None) -> bool:
    """The device is trusted, belongs to the user, and the user is active."""
    return (
        user is not None
        and device is not None
        and device.state == "trusted"
        and device.user_id == user.id
        and bool(user.active)
    )


def untrusted_code(user: User | None, device: Device | None) -> str:
    """Why a verified sign-in is refused when its device or user changed since."""
    code = "owner_inactive" if user is not None and not user.active else "device_revoked"
    if device is not None and device.state == "suspended":
        code = "device_suspended"
    return code


def why_not_claimed(services: Services, txn: LoginTransaction) -> str | None:
    """A completer's success claim was refused: None if the transaction was completed
    already, otherwise the refusal code (recorded on the transaction if it was still
    verified: the device or its owner changed since the answer)."""
    found = read_login(services.db.engine, txn.id)
    if found is None or found[0].completed_at is not None:
        return None
    fresh, user, device = found
    if fresh.status != "verified":
        return fresh.error_code or "expired"
    code = untrusted_code(user, device)
    with services.db.session() as s:
        transactions.mark_denied(
            s, txn.id, code=code, device_id=fresh.device_id, user_id=fresh.user_id
        )
    return code


def _posture_gate(
    services: Services,
    s: Session,
    txn: LoginTransaction,
    user: User,
    device: Device,
    choice: str | None,
) -> Continue | None:
    """Evaluate posture for this sign-in: a posture page to show instead, or None.

    A blocking failure keeps the sign-in open on a page with each failing check's
    remediation and "Recheck now"; cancelling it denies the sign-in. Warnings are
    shown once, and the user continues past them.
    """
    posture = services.posture
    if posture is None or not posture.checks():
        return None  # nothing to enforce: spare the sign-in the group lookup
    if not isinstance(posture, Posture):  # the app factory builds a Posture
        raise TypeError("Services.posture must be a posture.service.Posture")
    verdict = posture.for_login(s, device.id, user.id, user.user_name, groups_of(s, user.id))
    if verdict.action is Action.BLOCK:
        if choice == "cancel":
            transactions.mark_denied(
                s, txn.id, code="posture_blocked", device_id=device.id, user_id=user.id
            )
            txn.status, txn.error_code = "denied", "posture_blocked"
            audit.record(
                s,
                "login.posture",
                "denied",
                code="posture_blocked",
                user_id=user.id,
                device_id=device.id,
                details=verdict.summary(),
            )
            return None
        return Continue("posture", txn, user, device, verdict, blocked=True)
    if verdict.action is Action.WARN and choice != "continue":
        return Continue("posture", txn, user, device, verdict, blocked=False)
    return None
