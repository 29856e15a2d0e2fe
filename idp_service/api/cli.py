"""``devicetrust api-token``: named bearer tokens for the admin API (``/api/v1``).

A token is printed once, by ``create``; the database keeps only its SHA-256.
Every command that prints data takes ``--json``.
"""

from __future__ import annotations

import json
from typing import Any

import click


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def _run(action: Any) -> Any:
    from idp_service.api.tokens import TokenError
    from idp_service.platform.config import Settings
    from idp_service.platform.db import Database

    db = Database(Settings.from_env().database_url)
    try:
        with db.session() as session:
            return action(session)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()


@click.group("api-token")
def api_token() -> None:
    """Bearer tokens for the admin API, each with a scope: read, or write (implies read)."""


@api_token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "write"]), default="read", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create(name: str, scope: str, as_json: bool) -> None:
    """Make the token NAME and print it (shown once; only its hash is stored)."""
    from idp_service.api import tokens

    token = _run(lambda s: tokens.create(s, name, scope))
    _emit(
        {"name": name, "scope": scope, "token": token},
        as_json,
        f"API token {name!r} ({scope}; shown once, store it now):\n{token}",
    )


@api_token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List tokens by name, with scope, state and last use (never the tokens)."""
    from idp_service.api import tokens

    rows = _run(tokens.list_tokens)
    lines = [
        f"{r['name']:24} {r['scope']:5} {r['state']:8} created {r['created_at']}  last used "
        f"{r['last_used_at'] or 'never'}"
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no API tokens")


@api_token.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def revoke(name: str, as_json: bool) -> None:
    """Revoke the token NAME at once."""
    from idp_service.api import tokens

    _run(lambda s: tokens.revoke(s, name))
    _emit({"name": name, "state": "revoked"}, as_json, f"revoked API token {name!r}")
