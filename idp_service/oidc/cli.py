"""``devicetrust oidc-client ...`` and ``devicetrust oidc-key ...``: OpenID Connect clients
and the provider's key rollover.

Thin: options become a settings body for :mod:`idp_service.oidc.clients` (the same
checks as the admin API); ``--json`` prints JSON. A client secret is printed once,
when it is made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from idp_service.platform.cli_support import in_session
from trust_protocol.cli_output import emit


def _options(f):  # noqa: ANN001, ANN202
    options = [
        click.option("--name", help="Display name (shown on the login page)."),
        click.option(
            "--mode",
            type=click.Choice(["app", "factor"]),
            help="app: a full IdP for an application (code flow); factor: Entra EAM or Okta's "
            "IdP authenticator name the user, devicetrust checks the device.",
        ),
        click.option(
            "--redirect-uri",
            "redirect_uris",
            multiple=True,
            help="A redirect URI, matched exactly. Repeatable; replaces the list.",
        ),
        click.option(
            "--post-logout-redirect-uri",
            "post_logout_redirect_uris",
            multiple=True,
            help="Where RP-initiated logout may return to. Repeatable; replaces the list.",
        ),
        click.option(
            "--auth-method",
            "token_auth_method",
            type=click.Choice(
                ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
            ),
            help="How the client authenticates at the token endpoint (none: a public client, "
            "PKCE required).",
        ),
        click.option(
            "--jwks-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The client's public JWK set, for private_key_jwt.",
        ),
        click.option(
            "--claim",
            "claim_pairs",
            multiple=True,
            metavar="SOURCE=NAME",
            help="Map a source (email, name, groups, device_id, posture) to a claim name; "
            "SOURCE= drops it. Repeatable.",
        ),
        click.option("--acr", help="The id_token's acr (default possessionorinherence)."),
        click.option("--id-token-minutes", type=click.IntRange(1, 60), help="id_token lifetime."),
        click.option("--eam-tenant-id", help="Entra EAM: the tenant id whose hints are accepted."),
        click.option(
            "--eam-jwks-url",
            help="Entra EAM: the tenant's signing keys, e.g. "
            "https://login.microsoftonline.com/TENANT/discovery/v2.0/keys.",
        ),
        click.option(
            "--eam-issuer", help="Entra EAM: the hint's iss (default Entra's v2.0 issuer)."
        ),
        click.option(
            "--eam-hint-max-age",
            type=click.IntRange(0, 3600),
            help="Entra EAM: seconds past its expiry a hint is still accepted (default 600).",
        ),
        click.option(
            "--eam-user-match",
            type=click.Choice(["external_id", "external_id_then_username"]),
            help="Entra EAM: map the hint's oid to externalId, then (optionally) its "
            "preferred_username to userName.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _body(opts: dict[str, Any], current_claims: dict[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in (
        "name",
        "mode",
        "token_auth_method",
        "acr",
        "id_token_minutes",
        "eam_tenant_id",
        "eam_jwks_url",
        "eam_issuer",
        "eam_hint_max_age",
        "eam_user_match",
    ):
        if opts.get(key) is not None:
            body[key] = opts[key]
    for key in ("redirect_uris", "post_logout_redirect_uris"):
        if opts.get(key):
            body[key] = list(opts[key])
    if opts.get("jwks_file"):
        try:
            body["jwks"] = json.loads(opts["jwks_file"].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(
                f"cannot read a JWK set: {exc}", param_hint="--jwks-file"
            ) from None
    if opts.get("claim_pairs"):
        from idp_service.oidc.clients import DEFAULT_CLAIMS

        mapping = dict(current_claims if current_claims is not None else DEFAULT_CLAIMS)
        for pair in opts["claim_pairs"]:
            source, sep, name = pair.partition("=")
            if not sep:
                raise click.BadParameter(f"{pair!r}: use SOURCE=NAME", param_hint="--claim")
            if name:
                mapping[source.strip()] = name.strip()
            else:
                mapping.pop(source.strip(), None)
        body["claims"] = mapping
    return body


def _text(c: dict[str, Any]) -> str:
    keys = ("client_id", "name", "enabled", "mode", "token_auth_method", "has_secret")
    lines = [f"{k}: {c[k]}" for k in keys]
    lines += [f"redirect_uri: {u}" for u in c["redirect_uris"]]
    lines += [f"post_logout_redirect_uri: {u}" for u in c["post_logout_redirect_uris"]]
    lines += [
        f"claims: {c['claims']}",
        f"acr: {c['acr']}",
        f"id_token_minutes: {c['id_token_minutes']}",
    ]
    if c["eam_tenant_id"]:
        for k in (
            "eam_tenant_id",
            "eam_issuer",
            "eam_jwks_url",
            "eam_hint_max_age",
            "eam_user_match",
        ):
            lines.append(f"{k}: {c[k]}")
    return "\n".join(lines)


def _with_secret(data: dict[str, Any], secret: str | None) -> tuple[dict[str, Any], str]:
    if secret is None:
        return data, ""
    return {**data, "client_secret": secret}, (
        f"\nclient_secret: {secret}\n(shown once: store it in the application now)"
    )


@click.group("oidc-client")
def oidc_client() -> None:
    """OpenID Connect clients: applications, Entra EAM and Okta's IdP authenticator."""


@oidc_client.command("add")
@click.option("--client-id", help="The client id (default: generated).")
@_options
def client_add(client_id: str | None, as_json: bool, **opts: Any) -> None:
    """Register a client; prints its secret once (confidential clients)."""
    from idp_service.oidc import clients

    body = _body(opts, None)
    if client_id:
        body["client_id"] = client_id

    def run(s: Any) -> tuple[dict[str, Any], str | None]:
        row, secret = clients.add(s, body, actor="cli")
        return clients.to_json(row), secret

    data, secret = in_session(run)
    data, extra = _with_secret(data, secret)
    emit(data, as_json, f"added OIDC client {data['client_id']}\n{_text(data)}{extra}")


@oidc_client.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def client_list(as_json: bool) -> None:
    """List clients."""
    from idp_service.oidc import clients

    rows = in_session(lambda s: [clients.to_json(r) for r in clients.list_all(s)])
    lines = [
        f"{c['client_id'][:34]:34} {c['name'][:30]:30} {c['mode']:6} "
        f"{c['token_auth_method']}{'' if c['enabled'] else ', disabled'}"
        for c in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "no OIDC clients; add one: devicetrust oidc-client add")


@oidc_client.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def client_show(client_id: str, as_json: bool) -> None:
    """Show one client."""
    from idp_service.oidc import clients

    data = in_session(lambda s: clients.to_json(clients.get(s, client_id)))
    emit(data, as_json, _text(data))


@oidc_client.command("update")
@click.argument("client_id")
@click.option("--enable/--disable", "enabled", default=None, help="Allow or stop sign-in.")
@click.option("--rotate-secret", is_flag=True, help="Make a new client secret (printed once).")
@_options
def client_update(
    client_id: str, enabled: bool | None, rotate_secret: bool, as_json: bool, **opts: Any
) -> None:
    """Change a client's settings."""
    from idp_service.oidc import clients

    def run(s: Any) -> tuple[dict[str, Any], str | None]:
        current = clients.get(s, client_id)
        body = _body(opts, dict(current.claims))
        if enabled is not None:
            body["enabled"] = enabled
        row, secret = clients.update(s, client_id, body, rotate_secret=rotate_secret, actor="cli")
        return clients.to_json(row), secret

    data, secret = in_session(run)
    data, extra = _with_secret(data, secret)
    emit(data, as_json, f"updated OIDC client {client_id}\n{_text(data)}{extra}")


@oidc_client.command("remove")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def client_remove(client_id: str, as_json: bool) -> None:
    """Remove a client (its access tokens stop working)."""
    from idp_service.oidc import clients

    in_session(lambda s: clients.remove(s, client_id, actor="cli"))
    emit({"removed": client_id}, as_json, f"removed OIDC client {client_id}")


@click.group("oidc-key")
def oidc_key() -> None:
    """The OpenID Connect signing keys (RS256, published with x5c), and their staged rollover."""


@oidc_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def key_list(as_json: bool) -> None:
    """List keys: active, next (published, not signing yet), previous, retired."""
    from idp_service.oidc import keys

    rows = in_session(lambda s: [keys.key_to_json(r) for r in keys.list_keys(s)])
    lines = [f"{k['id']}  {k['status']:8}  kid {k['kid']}" for k in rows]
    emit(rows, as_json, "\n".join(lines) or "no keys yet; the first sign-in makes one")


@oidc_key.command("rotate")
@click.option("--activate", "step", flag_value="activate", help="Step 2: sign with the staged key.")
@click.option("--retire", "step", flag_value="retire", help="Step 3: stop publishing the old key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def key_rotate(step: str | None, as_json: bool) -> None:
    """Staged rollover. Without options (step 1) a next key is published in the JWKS.

    \b
    1. devicetrust oidc-key rotate             publish the next key; clients refresh the JWKS
    2. devicetrust oidc-key rotate --activate  sign with it; the old key stays published
    3. devicetrust oidc-key rotate --retire    drop the old key (once its tokens expired)
    """
    from idp_service.oidc import keys

    def run(s: Any) -> dict[str, Any]:
        if step == "activate":
            return {"key": keys.key_to_json(keys.activate_next(s, actor="cli"))}
        if step == "retire":
            return {"retired": keys.retire_previous(s, actor="cli")}
        return {"key": keys.key_to_json(keys.stage_next(s, actor="cli"))}

    data = in_session(run, plain=(LookupError,))
    if step == "retire":
        text = f"retired {len(data['retired'])} previous key(s)"
    elif step == "activate":
        text = (
            f"now signing with key {data['key']['kid']}; the previous key stays in the JWKS "
            "until `devicetrust oidc-key rotate --retire`"
        )
    else:
        text = (
            f"published next key {data['key']['kid']} in the JWKS; once every client has "
            "refreshed it (Entra: 24 h), run `devicetrust oidc-key rotate --activate`"
        )
    emit(data, as_json, text)
