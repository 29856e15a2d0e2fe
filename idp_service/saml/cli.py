"""``devicetrust sp ...`` and ``devicetrust keys ...``: the SP registry and IdP key rollover.

Both groups are thin: they parse options and call :mod:`idp_service.saml.api`,
printing JSON with ``--json``.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

import click

from idp_service.platform.cli_support import call, database
from trust_protocol.cli_output import emit

MAX_METADATA_DOWNLOAD = 512 * 1024


def _read_metadata(source: str) -> str:
    """Metadata from a file, ``-`` (stdin) or an http(s) URL."""
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=15) as resp:  # noqa: S310 - http(s) only
            data = resp.read(MAX_METADATA_DOWNLOAD + 1)
        if len(data) > MAX_METADATA_DOWNLOAD:
            raise click.ClickException("metadata document is too large")
        return data.decode("utf-8", "replace")
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None


def _setting_options(f):  # noqa: ANN001, ANN202
    options = [
        click.option("--name", help="Display name (shown on the login page)."),
        click.option(
            "--nameid-format",
            type=click.Choice(["emailAddress", "persistent", "transient", "unspecified"]),
            help="NameID format of assertions for this SP.",
        ),
        click.option(
            "--attribute",
            "attribute_pairs",
            multiple=True,
            metavar="SOURCE=NAME",
            help="Map a source (email, display_name, groups, device_id, posture) to an "
            "attribute name; SOURCE= drops it. Repeatable.",
        ),
        click.option(
            "--require-signed-requests/--no-require-signed-requests",
            default=None,
            help="Refuse AuthnRequests that are not signed.",
        ),
        click.option(
            "--sign",
            type=click.Choice(["both", "response", "assertion"]),
            help="What to sign (default both).",
        ),
        click.option(
            "--signature-algorithm",
            type=click.Choice(["rsa-sha256", "ecdsa-sha256"]),
            help="RSA-SHA256 (default) or ECDSA-SHA256.",
        ),
        click.option(
            "--encrypt/--no-encrypt",
            "encrypt_assertion",
            default=None,
            help="Encrypt assertions (AES-256-GCM, RSA-OAEP) to the SP's certificate.",
        ),
        click.option(
            "--allow-idp-initiated/--no-allow-idp-initiated",
            default=None,
            help="Allow unsolicited (IdP-initiated) sign-in to this SP.",
        ),
        click.option(
            "--identity-broker/--no-identity-broker",
            default=None,
            help="Factor mode: the SP (Okta, Entra ID) names the user in a signed request.",
        ),
        click.option("--session-minutes", type=int, help="SessionNotOnOrAfter, in minutes."),
        click.option(
            "--requested-authn-context",
            type=click.Choice(["strict", "lenient"]),
            help="An AuthnRequest asking for an authentication context devicetrust cannot "
            "satisfy: strict (default) answers Responder/NoAuthnContext, lenient asserts the "
            "device-bound class anyway (for brokers that always ask for one).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _body(opts: dict[str, Any], current_attributes: dict[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in (
        "name",
        "nameid_format",
        "require_signed_requests",
        "signature_algorithm",
        "encrypt_assertion",
        "allow_idp_initiated",
        "identity_broker",
        "session_minutes",
        "requested_authn_context",
    ):
        if opts.get(key) is not None:
            body[key] = opts[key]
    if opts.get("sign"):
        body["sign_response"] = opts["sign"] in ("both", "response")
        body["sign_assertion"] = opts["sign"] in ("both", "assertion")
    if opts.get("attribute_pairs"):
        from idp_service.saml.attributes import DEFAULT_MAPPING

        mapping = dict(current_attributes if current_attributes is not None else DEFAULT_MAPPING)
        for pair in opts["attribute_pairs"]:
            source, sep, name = pair.partition("=")
            if not sep:
                raise click.BadParameter(f"{pair!r}: use SOURCE=NAME", param_hint="--attribute")
            if name:
                mapping[source.strip()] = name.strip()
            else:
                mapping.pop(source.strip(), None)
        body["attributes"] = mapping
    return body


def _sp_line(sp: dict[str, Any]) -> str:
    flags = [sp["nameid_format"], sp["signature_algorithm"]]
    if not sp["enabled"]:
        flags.append("disabled")
    if sp["identity_broker"]:
        flags.append("identity-broker")
    if sp["encrypt_assertion"]:
        flags.append("encrypted")
    if sp["requested_authn_context"] == "lenient":
        flags.append("authn-context-lenient")
    return f"{sp['name'][:30]:30} {sp['entity_id'][:60]:60} {', '.join(flags)}"


def _sp_text(sp: dict[str, Any]) -> str:
    lines = [f"{k}: {sp[k]}" for k in ("id", "entity_id", "name", "enabled")]
    lines += [f"acs: [{a['index']}] {a['location']}" for a in sp["acs"]]
    lines += [
        f"{k}: {sp[k]}"
        for k in (
            "nameid_format",
            "attributes",
            "require_signed_requests",
            "sign_response",
            "sign_assertion",
            "signature_algorithm",
            "encrypt_assertion",
            "allow_idp_initiated",
            "identity_broker",
            "session_minutes",
            "requested_authn_context",
        )
    ]
    lines.append(f"signing certs: {len(sp['signing_certs'])}")
    lines.append(f"encryption certs: {len(sp['encryption_certs'])}")
    return "\n".join(lines)


@click.group("sp")
def sp_group() -> None:
    """SAML service providers (applications that sign in through devicetrust)."""


@sp_group.command("add")
@click.option(
    "--metadata", "source", required=True, help="The SP's metadata: a file, - or an http(s) URL."
)
@click.option("--entity-id", help="Which SP to take from a metadata aggregate.")
@_setting_options
def sp_add(source: str, entity_id: str | None, as_json: bool, **opts: Any) -> None:
    """Register an SP from its metadata."""
    from idp_service.saml import api

    body = {"metadata_xml": _read_metadata(source), **_body(opts, None)}
    if entity_id:
        body["entity_id"] = entity_id
    sp = call(api.create_sp, database(), body, actor="cli")
    emit(sp, as_json, f"added SP {sp['name']} ({sp['entity_id']})\n{_sp_text(sp)}")


@sp_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sp_list(as_json: bool) -> None:
    """List SPs."""
    from idp_service.saml import api

    sps = api.list_sps(database())
    emit(sps, as_json, "\n".join(_sp_line(sp) for sp in sps) or "no SPs")


@sp_group.command("show")
@click.argument("sp")
@click.option("--metadata", "with_metadata", is_flag=True, help="Include the imported metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sp_show(sp: str, with_metadata: bool, as_json: bool) -> None:
    """Show one SP (by id, entityID or name)."""
    from idp_service.saml import api

    data = call(api.get_sp, database(), sp, with_metadata=with_metadata)
    text = _sp_text(data) + (f"\n{data['metadata_xml']}" if with_metadata else "")
    emit(data, as_json, text)


@sp_group.command("update")
@click.argument("sp")
@click.option("--metadata", "source", help="Refresh endpoints and certificates from metadata.")
@click.option("--enable/--disable", "enabled", default=None, help="Allow or stop sign-in to it.")
@_setting_options
def sp_update(
    sp: str, source: str | None, enabled: bool | None, as_json: bool, **opts: Any
) -> None:
    """Change an SP's settings or refresh its metadata."""
    from idp_service.saml import api

    db = database()
    current = call(api.get_sp, db, sp)
    body = _body(opts, current["attributes"])
    if enabled is not None:
        body["enabled"] = enabled
    if source:
        body["metadata_xml"] = _read_metadata(source)
    data = call(api.update_sp, db, current["id"], body, actor="cli")
    emit(data, as_json, f"updated SP {data['name']}\n{_sp_text(data)}")


@sp_group.command("remove")
@click.argument("sp")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sp_remove(sp: str, as_json: bool) -> None:
    """Remove an SP."""
    from idp_service.saml import api

    data = call(api.delete_sp, database(), sp, actor="cli")
    emit(data, as_json, f"removed SP {data['removed']}")


@click.group("keys")
def keys_group() -> None:
    """IdP signing keys, and their staged rollover."""


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(as_json: bool) -> None:
    """List signing keys: active, next (published, not signing yet), previous, retired."""
    from idp_service.saml import api

    rows = api.list_keys(database())
    lines = [
        f"{k['id']}  {k['key_type']:3}  {k['status']:8}  {k['sha256_fingerprint'][:23]}…"
        for k in rows
    ]
    emit(rows, as_json, "\n".join(lines))


@keys_group.command("rotate")
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True)
@click.option("--activate", "step", flag_value="activate", help="Step 2: sign with the staged key.")
@click.option("--retire", "step", flag_value="retire", help="Step 3: stop publishing the old key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_rotate(key_type: str, step: str | None, as_json: bool) -> None:
    """Staged rollover. Without options (step 1) a next key is published in metadata.

    \b
    1. devicetrust keys rotate             publish the next key; SPs refresh metadata
    2. devicetrust keys rotate --activate  sign with it; the old key stays published
    3. devicetrust keys rotate --retire    drop the old key from metadata
    """
    from idp_service.saml import api

    step = step or "stage"
    data = call(api.rotate_keys, database(), key_type, step, actor="cli")
    texts = {
        "stage": "published next {kt} key {id} in metadata; once every SP has refreshed it, run "
        "`devicetrust keys rotate --activate`",
        "activate": "now signing with {kt} key {id}; the previous key stays in metadata until "
        "`devicetrust keys rotate --retire`",
    }
    if step == "retire":
        text = f"retired {len(data['retired'])} previous {key_type} key(s)"
    else:
        text = texts[step].format(kt=key_type, id=data["key"]["id"])
    emit(data, as_json, text)
