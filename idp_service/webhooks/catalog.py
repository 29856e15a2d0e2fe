"""Which audited decisions are webhook events, and what their payload says.

Events come from decisions, and every decision is audited: when
:func:`idp_service.platform.audit.record` writes an ``ok`` row whose action is a key of
:data:`EVENT_TYPES`, the audit sink :func:`idp_service.webhooks.outbox.on_audit`
enqueues the event in the same transaction. To make a
new decision an event, add its audit action here (and a line to docs/events.md).

This module imports nothing heavy: the audit sink consults it on every call.
"""

from __future__ import annotations

from typing import Any

# audit action -> event type
EVENT_TYPES: dict[str, str] = {
    "device.register": "device.registered",
    "device.approve": "device.approved",
    "device.deny": "device.denied",
    "device.revoke": "device.revoked",
    "device.retrust": "device.retrusted",
    "device.delete": "device.deleted",
    "device.change_owner": "device.owner_changed",
    "posture.change": "device.compliance_changed",
    # Lifecycle decisions (idp_service/devices/detection.py): a flag raised (clone, duplicate,
    # two agents, stale), a suspension, flags marked reviewed. Staleness under the
    # deny policy is a device.deny by the system; approving a suspended device is
    # a device.approve.
    "device.suspend": "device.suspended",
    "device.flag": "device.flagged",
    "device.flags_reviewed": "device.flags_reviewed",
    # A SCIM reactivation that sends the owner's trusted devices back to approval:
    # one event per device (see :func:`events_for`).
    "scim.user.reactivate": "device.reapproval_required",
    # A signed checkpoint of the audit chain (idp_service/platform/audit_chain.py): keep them
    # outside the database to prove later that nothing before them was removed.
    "audit.checkpoint": "audit.checkpoint",
    # A re-authentication token used after it was spent: it was copied; the device's token
    # family is revoked (idp_service/upstream/reauth.py).
    "reauth.reuse": "device.reauth_token_reused",
}
TEST_EVENT = "webhook.test"
ALL_TYPES: tuple[str, ...] = (*sorted(set(EVENT_TYPES.values())), TEST_EVENT)


def events_for(
    action: str,
    *,
    actor: str | None,
    user_id: str | None,
    device_id: str | None,
    details: dict[str, Any] | None,
) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event type, data)`` pairs an ``ok`` audit row of ``action`` stands for."""
    event_type = EVENT_TYPES.get(action)
    if event_type is None:
        return []
    details = dict(details or {})
    if action == "scim.user.reactivate":
        moved = details.get("devices_to_pending") or []
        return [
            (
                event_type,
                {
                    "device_id": moved_id,
                    "user_id": user_id,
                    "actor": actor,
                    "action": action,
                    "details": {
                        "from": "trusted",
                        "to": "pending",
                        "policy": details.get("policy"),
                    },
                },
            )
            for moved_id in moved
        ]
    return [
        (
            event_type,
            {
                "device_id": device_id,
                "user_id": user_id,
                "actor": actor,
                "action": action,
                "details": details,
            },
        )
    ]
