"""``devicetrust scim-token``: the named bearer tokens SCIM clients authenticate with.

A token is printed once, by ``create`` and ``rotate``; the database keeps only
its SHA-256. Every command that prints data takes ``--json``.
"""

from __future__ import annotations

import json
from typing import Any

import click


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def _session():  # noqa: ANN202 - a Database session; imported lazily to keep --help fast
    from idp_service.platform.config import Settings
    from idp_service.platform.db import Database

    return Database(Settings.from_env().database_url).session()


def _run(action: Any) -> Any:
    from scim.tokens import TokenError

    try:
        with _session() as session:
            return action(session)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("scim-token")
def scim_token() -> None:
    """Bearer tokens for SCIM clients (one per client: Okta, Entra ID, scripts)."""


@scim_token.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create(name: str, as_json: bool) -> None:
    """Make the token NAME and print it (shown once; only its hash is stored)."""
    from scim import tokens

    token = _run(lambda s: tokens.create(s, name))
    _emit(
        {"name": name, "token": token},
        as_json,
        f"SCIM token {name!r} (shown once, store it in the client now):\n{token}",
    )


@scim_token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List tokens by name, with their state and last use (never the tokens)."""
    from scim import tokens

    rows = _run(tokens.list_tokens)
    lines = [
        f"{r['name']:24} {r['state']:8} created {r['created_at']}  last used "
        f"{r['last_used_at'] or 'never'}"
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no SCIM tokens")


@scim_token.command("rotate")
@click.argument("name")
@click.option(
    "--grace",
    default=0,
    type=click.IntRange(0, 7 * 24 * 3600),
    show_default=True,
    help="Seconds during which the old token keeps working.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate(name: str, grace: int, as_json: bool) -> None:
    """Replace NAME's token with a new one, printed once."""
    from scim import tokens
    from trust_protocol.durations import format_duration

    token = _run(lambda s: tokens.rotate(s, name, grace_seconds=grace))
    _emit(
        {"name": name, "token": token, "grace_seconds": grace},
        as_json,
        f"new SCIM token for {name!r} (shown once):\n{token}"
        + (f"\nthe old one works for {format_duration(grace)} more" if grace else ""),
    )


@scim_token.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def revoke(name: str, as_json: bool) -> None:
    """Make NAME's token stop working now."""
    from scim import tokens

    _run(lambda s: tokens.revoke(s, name))
    _emit({"name": name, "state": "revoked"}, as_json, f"SCIM token {name!r} revoked")
