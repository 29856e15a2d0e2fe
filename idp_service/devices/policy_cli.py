"""``devicetrust policy``: show and set registration policies (global and per SCIM group).

The rules live in ``idp_service/devices/registration_policy.py``; every change is
audited with the actor ``cli`` and the policy before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from idp_service.platform.cli_support import in_session, settings
from idp_service.platform.config import REGISTRATION_POLICIES
from trust_protocol.cli_output import emit


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(session, *args, env_default=..., **kwargs)`` in one transaction; refusals as errors."""
    env_default = settings().registration_policy
    return in_session(lambda session: fn(session, *args, env_default=env_default, **kwargs))


@click.group()
def policy() -> None:
    """Registration policies: tofu, trusted_device_approval, admin_approval.

    The most specific policy wins: a group the user is directly in, then groups
    reached through nesting, then the global one (docs/admin.md).
    """


@policy.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def policy_show(as_json: bool) -> None:
    """Show the global policy (and where it comes from) and every group's policy."""
    from idp_service.devices import registration_policy as rp

    data = _run(rp.listing)
    g = data["global"]
    lines = [f"global: {g['policy']} (from {g['source']}; environment default {g['env_default']})"]
    lines += [f"group {row['group']}: {row['policy']}" for row in data["groups"]]
    emit(data, as_json, "\n".join(lines))


@policy.command("set")
@click.argument("name", metavar="POLICY", type=click.Choice(REGISTRATION_POLICIES))
@click.option("--group", help="Set it for this SCIM group (displayName or id), not globally.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def policy_set(name: str, group: str | None, as_json: bool) -> None:
    """Set the global policy, or one group's with --group."""
    from idp_service.devices import registration_policy as rp

    if group:
        data = _run(rp.set_group, group, name, actor="cli")
    else:
        data = _run(rp.set_global, name, actor="cli")
    where = f"group {group}" if group else "global"
    emit(data, as_json, f"{where}: {data['before'] or '(none)'} -> {name}")


@policy.command("clear")
@click.option("--group", help="Clear this SCIM group's policy (displayName or id).")
@click.option("--global", "clear_global", is_flag=True, help="Drop the stored global policy.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def policy_clear(group: str | None, clear_global: bool, as_json: bool) -> None:
    """Clear a group's policy (--group NAME), or the stored global one (--global)."""
    from idp_service.devices import registration_policy as rp

    if bool(group) == clear_global:
        raise click.UsageError("name exactly one of --group NAME or --global")
    if group:
        data = _run(rp.clear_group, group, actor="cli")
        emit(data, as_json, f"group {group}: {data['before'] or '(none)'} -> (cleared)")
    else:
        data = _run(rp.clear_global, actor="cli")
        emit(data, as_json, "global: back to the DEVICETRUST_REGISTRATION_POLICY default")
