"""Registration policies: which one applies to a new device, and how admins set them.

Three policies decide the state a newly registered device starts in:

* ``tofu``: the user's first device is trusted; later ones wait for an admin.
* ``trusted_device_approval``: the first device is trusted (nothing can vouch
  for it yet); a later one waits, and a code sealed to the user's trusted
  devices lets the user approve it (``idp_service/devices/approve.py``).
* ``admin_approval``: every device waits for an admin.

The global default comes from ``DEVICETRUST_REGISTRATION_POLICY`` and may be
overridden at run time by a stored setting; SCIM groups may carry their own.
**The most specific wins**: a policy on a group the user is a direct member of
beats one on a group reached through nesting (fewer steps win), which beats
the global one; ties at the same depth go to the strictest policy.
:func:`resolve` is that rule as a pure function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp_service.devices.approval_tables import RegistrationPolicy
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform import audit
from idp_service.platform.config import REGISTRATION_POLICIES
from idp_service.platform.errors import Invalid, NotFound
from idp_service.platform.identity import name_key
from idp_service.platform.models import Device, utcnow

# From least to most strict; ties between groups at one depth resolve to the strictest.
POLICIES = REGISTRATION_POLICIES
STRICTNESS = {name: rank for rank, name in enumerate(POLICIES)}
GLOBAL_SCOPE = "global"
MAX_DEPTH = 32  # nesting deeper than this is not followed


def check_policy(policy: object) -> str:
    """``policy`` if it names a policy; else an ``Invalid`` ``bad_policy`` refusal."""
    if not isinstance(policy, str) or policy not in STRICTNESS:
        raise Invalid(
            "bad_policy", "The registration policy must be one of: " + ", ".join(POLICIES) + "."
        )
    return policy


@dataclass(frozen=True)
class Resolution:
    """The policy that applies and where it came from: ``env``, ``global`` or ``group:<id>``."""

    policy: str
    source: str


def resolve(
    default: Resolution, group_policies: Mapping[str, str], depths: Mapping[str, int]
) -> Resolution:
    """The most specific policy for a user (pure).

    ``default`` is the global policy (from the environment or the stored
    setting); ``group_policies`` maps group ids to their policy; ``depths``
    maps each group the user belongs to to its distance (1 = direct member).
    Groups with a policy that the user is not in are ignored.
    """
    best: tuple[int, int, str] | None = None  # (depth, -strictness, group id)
    for group_id, depth in depths.items():
        policy = group_policies.get(group_id)
        if policy is None:
            continue
        key = (depth, -STRICTNESS[policy], group_id)
        if best is None or key < best:
            best = key
    if best is None:
        return default
    return Resolution(group_policies[best[2]], f"group:{best[2]}")


def group_depths(session: Session, user_id: str) -> dict[str, int]:
    """Every group ``user_id`` is in, with its least number of steps (1 = direct member)."""
    depths: dict[str, int] = {}
    frontier = [user_id]
    for depth in range(1, MAX_DEPTH + 1):
        if not frontier:
            break
        found = session.scalars(
            select(GroupMember.group_id).where(GroupMember.value.in_(frontier)).distinct()
        ).all()
        frontier = [g for g in found if g not in depths]
        for g in frontier:
            depths[g] = depth
    return depths


def global_policy(session: Session, env_default: str) -> Resolution:
    """The stored global setting if there is one, else the environment's default."""
    stored = session.get(RegistrationPolicy, GLOBAL_SCOPE)
    if stored is not None:
        return Resolution(stored.policy, "global")
    return Resolution(env_default, "env")


def effective(session: Session, env_default: str, user_id: str) -> Resolution:
    """The policy that applies to a new device of ``user_id``."""
    depths = group_depths(session, user_id)
    group_policies: dict[str, str] = {}
    if depths:
        rows = session.execute(
            select(RegistrationPolicy.group_id, RegistrationPolicy.policy).where(
                RegistrationPolicy.group_id.in_(list(depths))
            )
        ).all()
        group_policies = {g: p for g, p in rows if g is not None}
    return resolve(global_policy(session, env_default), group_policies, depths)


@dataclass(frozen=True)
class Decision:
    """The state a new device starts in, the policy behind it, and whether a code is due."""

    state: str
    policy: str
    source: str
    needs_code: bool = False

    @property
    def audit(self) -> dict[str, str]:
        """What the ``device.register`` audit event records about the decision."""
        return {"policy": self.policy, "policy_source": self.source}


def decide(session: Session, env_default: str, user_id: str) -> Decision:
    """Apply the effective policy to a new device of ``user_id``."""
    applied = effective(session, env_default, user_id)
    if applied.policy == "admin_approval":
        return Decision("pending", applied.policy, applied.source)
    trusted = session.execute(
        select(func.count())
        .select_from(Device)
        .where(Device.user_id == user_id, Device.state == "trusted")
    ).scalar_one()
    if trusted == 0:
        return Decision("trusted", applied.policy, applied.source)
    return Decision(
        "pending",
        applied.policy,
        applied.source,
        needs_code=applied.policy == "trusted_device_approval",
    )


# -- management (admin API, console, CLI) ------------------------------------------------------


def _find_group(session: Session, ref: str) -> Any:
    group = session.get(Group, ref)
    if group is None:
        group = session.scalars(
            select(Group).where(Group.display_name_key == name_key(ref)).limit(1)
        ).first()
    if group is None:
        raise NotFound("group_not_found", f"no SCIM group {ref!r} (by id or displayName)")
    return group


def listing(session: Session, env_default: str) -> dict[str, Any]:
    """The global policy (and where it comes from) and every group's policy."""
    stored = session.get(RegistrationPolicy, GLOBAL_SCOPE)
    rows = session.execute(
        select(RegistrationPolicy, Group.display_name)
        .join(Group, Group.id == RegistrationPolicy.group_id)
        .order_by(func.lower(Group.display_name))
    ).all()
    return {
        "global": {
            "policy": stored.policy if stored else env_default,
            "source": "setting" if stored else "env",
            "env_default": env_default,
            "updated_at": stored.updated_at.isoformat() if stored else None,
            "updated_by": stored.updated_by if stored else None,
        },
        "groups": [
            {
                "group_id": row.group_id,
                "group": name,
                "policy": row.policy,
                "updated_at": row.updated_at.isoformat(),
                "updated_by": row.updated_by,
            }
            for row, name in rows
        ],
    }


def _write(
    session: Session,
    scope: str,
    group_id: str | None,
    policy: str | None,
    *,
    actor: str,
    env_default: str,
    group_name: str | None = None,
) -> dict[str, Any]:
    row = session.get(RegistrationPolicy, scope, with_for_update=True)
    before = row.policy if row is not None else None
    if policy is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        try:
            # A savepoint: if another admin created this scope's row meanwhile, the
            # insert collides and this becomes an update of their row.
            with session.begin_nested():
                session.add(
                    RegistrationPolicy(
                        scope=scope,
                        group_id=group_id,
                        policy=policy,
                        updated_at=utcnow(),
                        updated_by=actor,
                    )
                )
        except IntegrityError:
            row = session.get(
                RegistrationPolicy, scope, with_for_update=True, populate_existing=True
            )
            if row is None:  # pragma: no cover - it collided, so it exists
                raise
            before = row.policy
            row.policy, row.updated_at, row.updated_by = policy, utcnow(), actor
    else:
        row.policy, row.updated_at, row.updated_by = policy, utcnow(), actor
    details: dict[str, Any] = {"scope": "global" if group_id is None else "group"}
    if group_id is not None:
        details.update(group_id=group_id, group=group_name)
    details.update(before=before, after=policy)
    if group_id is None:
        details["env_default"] = env_default
    audit.record(
        session,
        "policy.set" if policy is not None else "policy.clear",
        "ok",
        actor=actor,
        details=details,
    )
    session.flush()
    return {"scope": details["scope"], "group_id": group_id, "before": before, "after": policy}


def set_global(session: Session, policy: str, *, actor: str, env_default: str) -> dict[str, Any]:
    """Store the run-time global policy (overrides the environment's), audited."""
    return _write(
        session, GLOBAL_SCOPE, None, check_policy(policy), actor=actor, env_default=env_default
    )


def clear_global(session: Session, *, actor: str, env_default: str) -> dict[str, Any]:
    """Drop the stored global policy: the environment's default applies again, audited."""
    return _write(session, GLOBAL_SCOPE, None, None, actor=actor, env_default=env_default)


def set_group(
    session: Session, group_ref: str, policy: str, *, actor: str, env_default: str
) -> dict[str, Any]:
    """Set the policy of one SCIM group (by id or displayName), audited."""
    check_policy(policy)
    group = _find_group(session, group_ref)
    return _write(
        session,
        f"group:{group.id}",
        group.id,
        policy,
        actor=actor,
        env_default=env_default,
        group_name=group.display_name,
    )


def clear_group(
    session: Session, group_ref: str, *, actor: str, env_default: str
) -> dict[str, Any]:
    """Remove a group's policy (its members follow the next most specific one), audited."""
    group = _find_group(session, group_ref)
    return _write(
        session,
        f"group:{group.id}",
        group.id,
        None,
        actor=actor,
        env_default=env_default,
        group_name=group.display_name,
    )
