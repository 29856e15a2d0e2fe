"""The device state machine: every change of ``Device.state``, and what comes with it, in one
place.

A device is ``pending``, ``trusted``, ``denied``, ``revoked`` or ``suspended``
(:data:`~idp_service.platform.models.DEVICE_STATES`); registration chooses the first
state (``idp_service/devices/enroll.py``). After that the state changes only through
:func:`move` (one device) or :func:`reactivate_owner` (a reactivated owner's devices),
along a transition of :data:`TRANSITIONS`:

============  ===================================  ===========  =======================
transition    from                                 to           who
============  ===================================  ===========  =======================
approve       pending, denied, suspended           trusted      an admin
deny          pending, suspended                   denied       an admin
revoke        trusted, pending, suspended          revoked      an admin
retrust       revoked, denied                      trusted      an admin
approve_code  pending                              trusted      a trusted device's code
suspend       trusted                              suspended    detection (a clone)
deny_stale    trusted, pending                     denied       detection (staleness)
reapprove     trusted                              pending      a SCIM reactivation
============  ===================================  ===========  =======================

Each transition declares its side effects once:

* the device's open approval request (``idp_service/devices/approve.py``) is
  closed, as ``approved`` when the request's own code trusted the device and as
  ``closed`` otherwise, so that no code can change the device afterwards;
* the console sessions opened through the device end (``idp_service/directory/sessions.py``)
  when an admin denies or revokes it;
* an audit event is written, and with it, in the same transaction, the webhook
  event its action stands for (``idp_service/webhooks/catalog.py``).

A transition the table does not allow is refused with a :class:`Conflict` carrying the
transition's stable code (``bad_transition``, or ``approval_closed`` for a code that
comes too late), and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.devices import queries as device_queries
from idp_service.devices.approval_tables import ApprovalRequest
from idp_service.directory.sessions import end_for_device
from idp_service.platform import audit
from idp_service.platform.errors import Conflict
from idp_service.platform.models import DEVICE_STATES, Device, utcnow
from idp_service.upstream import reauth

STATES: tuple[str, ...] = DEVICE_STATES


@dataclass(frozen=True)
class Transition:
    """One allowed change of state and its side effects."""

    name: str
    sources: tuple[str, ...]
    target: str
    audit_action: str  # the audit event; a webhook event when webhooks/catalog.py lists it
    request_status: str = "closed"  # how the device's open approval request ends
    ends_sessions: bool = False  # end the console sessions opened through the device
    refusal: str = "bad_transition"  # the stable code of a refused (illegal) move
    refusal_message: str = "cannot {name} a device that is {state}"

    def allows(self, state: str) -> bool:
        """Whether a device in ``state`` may take this transition."""
        return state in self.sources

    def refuse(self, state: str) -> Conflict:
        """The refusal of this transition for a device in ``state``."""
        return Conflict(self.refusal, self.refusal_message.format(name=self.name, state=state))


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        # An admin's decisions (registry.change_state: the console, the admin API, the CLI).
        Transition("approve", ("pending", "denied", "suspended"), "trusted", "device.approve"),
        Transition("deny", ("pending", "suspended"), "denied", "device.deny", ends_sessions=True),
        Transition(
            "revoke",
            ("trusted", "pending", "suspended"),
            "revoked",
            "device.revoke",
            ends_sessions=True,
        ),
        Transition("retrust", ("revoked", "denied"), "trusted", "device.retrust"),
        # A code from one of the owner's trusted devices (approve.py).
        Transition(
            "approve_code",
            ("pending",),
            "trusted",
            "device.approve",
            request_status="approved",
            refusal="approval_closed",
            refusal_message="This device is no longer waiting for approval.",
        ),
        # Detection, by policy (detection.py): a clone is suspended, a stale device denied.
        Transition("suspend", ("trusted",), "suspended", "device.suspend"),
        Transition("deny_stale", ("trusted", "pending"), "denied", "device.deny"),
        # A SCIM reactivation under require_approval (scim/lifecycle.py): one audit event
        # for the owner, one webhook event (device.reapproval_required) per device moved.
        Transition("reapprove", ("trusted",), "pending", "scim.user.reactivate"),
    )
}

ADMIN_ACTIONS: tuple[str, ...] = ("approve", "deny", "revoke", "retrust")


def transition(name: str) -> Transition:
    """The transition called ``name`` (a programming error when there is none)."""
    return TRANSITIONS[name]


def allowed(name: str, state: str) -> bool:
    """Whether a device in ``state`` may take transition ``name``."""
    return TRANSITIONS[name].allows(state)


def check(device: Device, name: str) -> Transition:
    """The transition ``name`` for ``device``; its refusal when the device's state forbids it."""
    rule = TRANSITIONS[name]
    if not rule.allows(device.state):
        raise rule.refuse(device.state)
    return rule


def move(
    session: Session,
    device: Device,
    name: str,
    *,
    reason: str,
    actor: str,
    request_reason: str,
    details: Mapping[str, Any] | None = None,
    remote_addr: str | None = None,
) -> str:
    """Take transition ``name``: set the state and ``reason``, apply the side effects, audit.

    ``request_reason`` is recorded on a closed approval request; ``details`` are added to
    the audit event's ``from`` and ``to``. Returns the state the device left. Runs in the
    caller's transaction.
    """
    rule = check(device, name)
    before = device.state
    device.state = rule.target
    device.state_reason = reason
    req = device_queries.open_request(session, device.id)
    if req is not None:
        device_queries.close_request(session, req, rule.request_status, request_reason)
    if rule.ends_sessions:
        end_for_device(session, device.id, f"device_{rule.target}")
    if rule.target != "trusted":
        # Its re-authentication tokens die with its trust (idp_service/upstream/reauth.py).
        reauth.revoke_device(session, device.id, f"device_{rule.target}")
    audit.record(
        session,
        rule.audit_action,
        "ok",
        actor=actor,
        user_id=device.user_id,
        device_id=device.id,
        remote_addr=remote_addr,
        details={"from": before, "to": rule.target, **(details or {})},
    )
    return before


def revoke_reauth_of_user(session: Session, user_id: str, reason: str) -> int:
    """Revoke the re-authentication tokens of every device of ``user_id`` (SCIM deactivation)."""
    return reauth.revoke_user(session, user_id, reason)


def reactivate_owner(
    session: Session,
    user_id: str,
    *,
    actor: str | None,
    policy: str,
    reapprove: bool,
    reason: str,
) -> list[str]:
    """A reactivated owner: with ``reapprove``, move every trusted device of ``user_id`` to
    ``pending`` (transition ``reapprove``) in one statement; audit the reactivation.

    Returns the ids moved. The audit event (``scim.user.reactivate``, with ``policy``) is
    written either way; it stands for one webhook event per device moved.
    """
    rule = TRANSITIONS["reapprove"]
    moved = device_queries.ids_of_user(session, user_id, rule.sources) if reapprove else []
    if moved:
        session.execute(
            update(Device)
            .where(Device.user_id == user_id, Device.state.in_(rule.sources))
            .values(state=rule.target, state_reason=reason, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        open_requests = session.scalars(
            select(ApprovalRequest).where(
                ApprovalRequest.device_id.in_(moved), ApprovalRequest.status == "open"
            )
        )
        for req in open_requests:
            device_queries.close_request(session, req, rule.request_status, reason)
    audit.record(
        session,
        rule.audit_action,
        "ok",
        actor=actor,
        user_id=user_id,
        details={"policy": policy, "devices_to_pending": moved},
    )
    return moved


__all__ = [
    "ADMIN_ACTIONS",
    "STATES",
    "TRANSITIONS",
    "Transition",
    "allowed",
    "check",
    "move",
    "reactivate_owner",
    "transition",
]
