"""``devicetrust api-token`` and ``devicetrust scim-token``: one implementation, two groups.

A token is printed once, by ``create`` (and, for SCIM, ``rotate``); the
database keeps only its SHA-256. Every command that prints data takes
``--json``. What differs between the groups (the API's ``--scope``, SCIM's
``rotate``, the wording) comes from the token's :class:`~idp_service.tokens.Kind`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from idp_service.platform.cli_support import in_session
from idp_service.tokens import API, SCIM, Kind, TokenError
from trust_protocol.cli_output import emit
from trust_protocol.durations import format_duration

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@dataclass(frozen=True)
class Texts:
    """What one group says: its help and its confirmations (kept as each group always said)."""

    group_help: str
    list_help: str
    revoke_help: str
    created: Callable[[str, str | None, str], str]  # (name, scope, token)
    revoked: Callable[[str], str]
    none: str


def _run(action: Callable[[Any], Any]) -> Any:
    return in_session(action, plain=(TokenError,))


def _list_line(kind: Kind, row: dict[str, Any]) -> str:
    scope = f" {row['scope']:5}" if kind.scopes else ""
    return (
        f"{row['name']:24}{scope} {row['state']:8} created {row['created_at']}  last used "
        f"{row['last_used_at'] or 'never'}"
    )


def token_group(kind: Kind, texts: Texts) -> click.Group:
    """The ``create``/``list``/``revoke`` (and ``rotate``) commands for ``kind``'s tokens."""
    group = click.Group(kind.command, help=texts.group_help)

    @click.argument("name")
    @JSON_OPTION
    def create(name: str, as_json: bool, scope: str | None = None) -> None:
        token = _run(lambda s: kind.create(s, name, scope))
        data: dict[str, Any] = {"name": name}
        if kind.scopes:
            data["scope"] = scope
        data["token"] = token
        emit(data, as_json, texts.created(name, scope, token))

    if kind.scopes:
        create = click.option(
            "--scope", type=click.Choice(list(kind.scopes)), default="read", show_default=True
        )(create)
    group.command(
        "create", help="Make the token NAME and print it (shown once; only its hash is stored)."
    )(create)

    @group.command("list", help=texts.list_help)
    @JSON_OPTION
    def list_(as_json: bool) -> None:
        rows = _run(kind.list_tokens)
        text = "\n".join(_list_line(kind, r) for r in rows)
        emit(rows, as_json, text or texts.none)

    if kind.rotates:

        @group.command("rotate", help="Replace NAME's token with a new one, printed once.")
        @click.argument("name")
        @click.option(
            "--grace",
            default=0,
            type=click.IntRange(0, 7 * 24 * 3600),
            show_default=True,
            help="Seconds during which the old token keeps working.",
        )
        @JSON_OPTION
        def rotate(name: str, grace: int, as_json: bool) -> None:
            token = _run(lambda s: kind.rotate(s, name, grace_seconds=grace))
            emit(
                {"name": name, "token": token, "grace_seconds": grace},
                as_json,
                f"new {kind.label} token for {name!r} (shown once):\n{token}"
                + (f"\nthe old one works for {format_duration(grace)} more" if grace else ""),
            )

    @group.command("revoke", help=texts.revoke_help)
    @click.argument("name")
    @JSON_OPTION
    def revoke(name: str, as_json: bool) -> None:
        _run(lambda s: kind.revoke(s, name))
        emit({"name": name, "state": "revoked"}, as_json, texts.revoked(name))

    return group


api_token = token_group(
    API,
    Texts(
        group_help="Bearer tokens for the admin API, each with a scope: read, or write "
        "(implies read).",
        list_help="List tokens by name, with scope, state and last use (never the tokens).",
        revoke_help="Revoke the token NAME at once.",
        created=lambda name, scope, token: (
            f"API token {name!r} ({scope}; shown once, store it now):\n{token}"
        ),
        revoked=lambda name: f"revoked API token {name!r}",
        none="no API tokens",
    ),
)
scim_token = token_group(
    SCIM,
    Texts(
        group_help="Bearer tokens for SCIM clients (one per client: Okta, Entra ID, scripts).",
        list_help="List tokens by name, with their state and last use (never the tokens).",
        revoke_help="Make NAME's token stop working now.",
        created=lambda name, scope, token: (
            f"SCIM token {name!r} (shown once, store it in the client now):\n{token}"
        ),
        revoked=lambda name: f"SCIM token {name!r} revoked",
        none="no SCIM tokens",
    ),
)
