"""``devicetrust reauth``: the re-verification window, and an administrator's re-verify.

The rules live in ``idp_service/upstream/reauth.py``; every change is audited
with the actor ``cli``.
"""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from idp_service.platform.cli_support import in_session
from trust_protocol.cli_output import emit


@click.group("reauth")
def reauth_group() -> None:
    """Re-authentication tokens and re-verification with the upstream IdP (docs/oidc.md)."""


@reauth_group.command("set")
@click.argument("lifetime")
@click.option(
    "--required", is_flag=True, help="Every sign-in needs a token or an upstream sign-in."
)
@click.option(
    "--second-device",
    is_flag=True,
    help="A user's second and later devices need an upstream sign-in before a trusted "
    "device's code approves them.",
)
@click.option("--group", help="Set it for this SCIM group (displayName or id), not globally.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reauth_set(
    lifetime: str, required: bool, second_device: bool, group: str | None, as_json: bool
) -> None:
    """Set the window: LIFETIME after an upstream sign-in (30d, 12h, ...) tokens are good."""
    from idp_service.upstream import reauth

    data = in_session(
        lambda s: reauth.set_policy(
            s, lifetime, required=required, group=group, actor="cli", second_device=second_device
        )
    )
    extra = (", required" if required else "") + (", second device" if second_device else "")
    emit(data, as_json, f"{data['scope']}: tokens live {data['lifetime']}{extra}")


@reauth_group.command("clear")
@click.option("--group", help="Clear this SCIM group's window (displayName or id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reauth_clear(group: str | None, as_json: bool) -> None:
    """Remove the global window, or a group's with --group."""
    from idp_service.upstream import reauth

    data = in_session(lambda s: reauth.clear_policy(s, group=group, actor="cli"))
    emit(data, as_json, f"{data['scope']}: cleared" if data["cleared"] else "nothing to clear")


@reauth_group.command("reverify")
@click.option("--user", help="Every device of this user (userName or id).")
@click.option("--device", help="This device (id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reauth_reverify(user: str | None, device: str | None, as_json: bool) -> None:
    """Revoke tokens and require an upstream sign-in at the next sign-in of each device."""
    from idp_service.upstream import reauth

    if bool(user) == bool(device):
        raise click.UsageError("name exactly one of --user or --device")

    def run(session: Session) -> dict[str, Any]:
        target = reauth.reverify_target(session, user=user, device=device)
        return reauth.reverify(
            session, device_ids=target["device_ids"], user_id=target["user_id"], actor="cli"
        )

    data = in_session(run)
    emit(
        data,
        as_json,
        f"re-verify required on {len(data['devices'])} device(s); "
        f"{data['tokens_revoked']} token(s) revoked",
    )
