"""What a SCIM change of a user's state does to that user's devices.

Device trust hangs off the owner: :func:`trust_protocol.response.check_registration`
refuses every login of a device whose owner has ``users.active`` false
(``owner_inactive``). So deactivation is one write to ``users`` in the same
transaction as the SCIM change, and it holds on every replica at once. These
functions add what comes with it: the audit events, and on reactivation the
policy that decides whether the devices get their trust back.

Every function takes the caller's session and commits nothing.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import Device, utcnow


class Reactivation(StrEnum):
    """What reactivating a user does to the devices that were trusted before.

    ``require_approval`` (the default) moves them to ``pending``: the account
    was off, perhaps because the person left or a device was lost, and an
    administrator approves each device again. ``restore`` gives the trust back
    as it was.
    """

    require_approval = "require_approval"
    restore = "restore"


REAPPROVAL_REASON = "owner reactivated by SCIM; an administrator must approve this device again"


def deactivated(session: Session, user_id: str, *, actor: str | None, via: str) -> None:
    """Audit a user's deactivation (the caller wrote ``active=false``); end console sessions."""
    from idp_service.admin.sessions import end_for_user

    end_for_user(session, user_id, "owner_deactivated")
    trusted = _device_ids(session, user_id, "trusted")
    audit.record(
        session,
        "scim.user.deactivate",
        "ok",
        actor=actor,
        user_id=user_id,
        details={"via": via, "devices_blocked": trusted},
    )


def reactivated(
    session: Session, user_id: str, *, actor: str | None, policy: Reactivation
) -> list[str]:
    """Apply the reactivation policy to the user's devices; return the ids moved to pending."""
    moved: list[str] = []
    if policy is Reactivation.require_approval:
        moved = _device_ids(session, user_id, "trusted")
        if moved:
            session.execute(
                update(Device)
                .where(Device.user_id == user_id, Device.state == "trusted")
                .values(state="pending", state_reason=REAPPROVAL_REASON, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    audit.record(
        session,
        "scim.user.reactivate",
        "ok",
        actor=actor,
        user_id=user_id,
        details={"policy": policy.value, "devices_to_pending": moved},
    )
    return moved


def deleted(session: Session, user_id: str, *, actor: str | None, was_active: bool) -> None:
    """Audit a user's deletion (the caller tombstoned the row, which stays inactive)."""
    from idp_service.admin.sessions import end_for_user

    end_for_user(session, user_id, "owner_deleted")
    audit.record(
        session,
        "scim.user.delete",
        "ok",
        actor=actor,
        user_id=user_id,
        details={"was_active": was_active, "devices_blocked": _device_ids(session, user_id, None)},
    )


def _device_ids(session: Session, user_id: str, state: str | None) -> list[str]:
    query = select(Device.id).where(Device.user_id == user_id)
    if state is not None:
        query = query.where(Device.state == state)
    return list(session.scalars(query.order_by(Device.id)))


__all__ = ["REAPPROVAL_REASON", "Reactivation", "deactivated", "deleted", "reactivated"]
