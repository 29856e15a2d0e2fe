"""What a SCIM change of a user's state does to that user's devices.

Device trust hangs off the owner: :func:`trust_protocol.response.check_registration`
refuses every login of a device whose owner has ``users.active`` false
(``owner_inactive``). So deactivation is one write to ``users`` in the same
transaction as the SCIM change, and it holds on every replica at once. These
functions add what comes with it: the audit events, and on reactivation the
policy that decides whether the devices get their trust back.

Devices change state only through ``idp_service/devices/states.py`` (transition
``reapprove``). Every function takes the caller's session and commits nothing.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from idp_service.devices import queries as device_queries
from idp_service.devices import states
from idp_service.directory.sessions import end_for_user
from idp_service.platform import audit


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
    end_for_user(session, user_id, "owner_deactivated")
    states.revoke_reauth_of_user(session, user_id, "owner_deactivated")
    trusted = device_queries.ids_of_user(session, user_id, ("trusted",))
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
    """Apply the reactivation policy to the user's devices (audited); return the ids moved to
    pending."""
    return states.reactivate_owner(
        session,
        user_id,
        actor=actor,
        policy=policy.value,
        reapprove=policy is Reactivation.require_approval,
        reason=REAPPROVAL_REASON,
    )


def deleted(session: Session, user_id: str, *, actor: str | None, was_active: bool) -> None:
    """Audit a user's deletion (the caller tombstoned the row, which stays inactive); end
    console sessions and revoke re-authentication tokens, as a deactivation does."""
    end_for_user(session, user_id, "owner_deleted")
    states.revoke_reauth_of_user(session, user_id, "owner_deleted")
    audit.record(
        session,
        "scim.user.delete",
        "ok",
        actor=actor,
        user_id=user_id,
        details={
            "was_active": was_active,
            "devices_blocked": device_queries.ids_of_user(session, user_id),
        },
    )


__all__ = ["REAPPROVAL_REASON", "Reactivation", "deactivated", "deleted", "reactivated"]
