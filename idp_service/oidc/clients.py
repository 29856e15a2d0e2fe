"""The registry of OpenID Connect clients: checked settings, add, update, remove, show.

The CLI (``devicetrust oidc-client``), the admin API and the console page all
come through here, so every way in applies the same rules:

* redirect URIs are absolute, without fragment or wildcard, and matched exactly;
  ``http`` only on loopback hosts (native apps may use a private-use scheme);
* a confidential client gets a generated secret, shown once and stored as a
  SHA-256 hash; a public client (``token_auth_method`` ``none``) must use PKCE;
* a ``factor`` client may carry an Entra tenant (``eam_*``): the tenant id, the
  JWKS URL of its signing keys, the issuer (by default Entra's v2.0 issuer of
  that tenant), how far past its expiry a hint is accepted, and how a hint names
  our user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from idp_service.oidc import store
from idp_service.oidc.tables import OidcClient
from idp_service.platform import audit
from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict, Invalid, NotFound

MODES = ("app", "factor")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
USER_MATCH = ("external_id", "external_id_then_username")
CLAIM_SOURCES = ("email", "name", "groups", "device_id", "posture")
DEFAULT_CLAIMS: dict[str, str] = {
    "email": "email",
    "name": "name",
    "groups": "groups",
    "device_id": "device_id",
    "posture": "device_posture",
}
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "acr", "amr", "auth_time", "azp", "jti"}
    | {"at_hash", "c_hash", "sid", "preferred_username", "tid", "oid"}
)
CLIENT_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
TENANT_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
MAX_URIS = 20
MAX_URI = 2048
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
ENTRA_ISSUER = "https://login.microsoftonline.com/{tid}/v2.0"


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a client secret (what the table keeps)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_uri(uri: Any, what: str = "redirect URI") -> str:
    """An exact-match URI a client may register; ``Invalid`` with why otherwise."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI:
        raise Invalid("invalid_uri", f"a {what} is a string of at most {MAX_URI} characters")
    if "*" in uri or any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        raise Invalid("invalid_uri", f"{uri!r}: no wildcards, spaces or control characters")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise Invalid("invalid_uri", f"{uri!r}: not a URI (host or port)") from None
    if parts.fragment or "#" in uri:
        raise Invalid("invalid_uri", f"{uri!r}: a {what} has no fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and (parts.hostname or "") in LOOPBACK:
        return uri
    if "." in parts.scheme and parts.scheme not in ("http", "https") and not parts.netloc:
        return uri  # a native app's private-use scheme (RFC 8252), e.g. com.example.app:/cb
    raise Invalid(
        "invalid_uri",
        f"{uri!r}: use https (http only on 127.0.0.1, localhost or ::1), "
        "or a private-use scheme such as com.example.app:/callback",
    )


def _uris(value: Any, what: str, *, required: bool) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_URIS:
        raise Invalid("invalid_uri", f"{what}s are a list of at most {MAX_URIS}")
    if required and not value:
        raise Invalid("invalid_uri", f"a client needs at least one {what}")
    out: list[str] = []
    for uri in value:
        checked = check_uri(uri, what)
        if checked not in out:
            out.append(checked)
    return out


def check_claims(mapping: Any) -> dict[str, str]:
    """A claims mapping (source -> claim name; an empty name drops the source)."""
    if not isinstance(mapping, Mapping):
        raise Invalid("invalid_claims", "claims are an object of source -> claim name")
    clean: dict[str, str] = {}
    for source, name in mapping.items():
        if source not in CLAIM_SOURCES:
            raise Invalid(
                "invalid_claims",
                f"unknown claim source {source!r}; sources: {', '.join(CLAIM_SOURCES)}",
            )
        if name in (None, ""):
            continue
        if not isinstance(name, str) or not CLAIM_NAME.fullmatch(name) or name in RESERVED_CLAIMS:
            raise Invalid("invalid_claims", f"invalid claim name for {source!r}")
        clean[source] = name
    return clean


def _check_jwks(value: Any) -> dict[str, Any]:
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if not isinstance(value, Mapping) or not isinstance(value.get("keys"), list):
        raise Invalid("invalid_jwks", 'jwks is a JWK set: {"keys": [...]}')
    try:
        keys = KeySet.import_key_set(dict(value))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise Invalid("invalid_jwks", f"the JWK set does not load: {exc}") from None
    if any(k.is_private for k in keys.keys):
        raise Invalid("invalid_jwks", "the JWK set holds a private key; send public keys only")
    return {"keys": [k.as_dict(private=False) for k in keys.keys]}


def _apply(row: OidcClient, body: Mapping[str, Any]) -> None:
    """Set the fields ``body`` names on ``row``, checking each."""
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise Invalid("invalid_name", "a name is 1 to 256 characters")
        row.name = name.strip()
    if "enabled" in body:
        row.enabled = bool(body["enabled"])
    if "mode" in body:
        if body["mode"] not in MODES:
            raise Invalid("invalid_mode", f"mode is one of {', '.join(MODES)}")
        row.mode = body["mode"]
    if "redirect_uris" in body:
        row.redirect_uris = _uris(body["redirect_uris"], "redirect URI", required=True)
    if "post_logout_redirect_uris" in body:
        row.post_logout_redirect_uris = _uris(
            body["post_logout_redirect_uris"], "post-logout redirect URI", required=False
        )
    if "token_auth_method" in body:
        if body["token_auth_method"] not in AUTH_METHODS:
            raise Invalid(
                "invalid_auth_method", f"token_auth_method is one of {', '.join(AUTH_METHODS)}"
            )
        row.token_auth_method = body["token_auth_method"]
    if "jwks" in body:
        row.jwks = _check_jwks(body["jwks"]) if body["jwks"] is not None else None
    if "claims" in body:
        row.claims = check_claims(body["claims"])
    if "acr" in body:
        acr = body["acr"]
        if not isinstance(acr, str) or not re.fullmatch(r"[\x21-\x7e]{1,128}", acr):
            raise Invalid("invalid_acr", "acr is 1 to 128 printable characters, no spaces")
        row.acr = acr
    if "id_token_minutes" in body:
        minutes = body["id_token_minutes"]
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 60:
            raise Invalid("invalid_lifetime", "id_token_minutes is 1 to 60")
        row.id_token_minutes = minutes
    if "eam_tenant_id" in body:
        tid = body["eam_tenant_id"]
        if tid is not None and (not isinstance(tid, str) or not TENANT_ID.fullmatch(tid)):
            raise Invalid("invalid_tenant", "eam_tenant_id is the tenant's id (a GUID)")
        row.eam_tenant_id = tid
    if "eam_jwks_url" in body:
        url = body["eam_jwks_url"]
        row.eam_jwks_url = check_uri(url, "JWKS URL") if url is not None else None
    if "eam_issuer" in body:
        issuer = body["eam_issuer"]
        if issuer is not None and (not isinstance(issuer, str) or not 0 < len(issuer) <= 512):
            raise Invalid("invalid_issuer", "eam_issuer is a URL of at most 512 characters")
        row.eam_issuer = issuer
    if "eam_hint_max_age" in body:
        age = body["eam_hint_max_age"]
        if not isinstance(age, int) or isinstance(age, bool) or not 0 <= age <= 3600:
            raise Invalid("invalid_hint_age", "eam_hint_max_age is 0 to 3600 seconds")
        row.eam_hint_max_age = age
    if "eam_user_match" in body:
        if body["eam_user_match"] not in USER_MATCH:
            raise Invalid("invalid_user_match", f"eam_user_match is one of {', '.join(USER_MATCH)}")
        row.eam_user_match = body["eam_user_match"]


def _consistent(row: OidcClient) -> None:
    if row.token_auth_method == "private_key_jwt" and not row.jwks:  # noqa: S105 - an auth method name
        raise Invalid("invalid_jwks", "a private_key_jwt client needs its public keys (jwks)")
    eam = (row.eam_tenant_id, row.eam_jwks_url)
    if any(eam) and not all(eam):
        raise Invalid("invalid_tenant", "an EAM tenant needs both eam_tenant_id and eam_jwks_url")
    if any(eam) and row.mode != "factor":
        raise Invalid("invalid_mode", "an EAM tenant belongs to a factor-mode client")


def issuer_of_tenant(row: OidcClient) -> str | None:
    """The ``iss`` a hint of this client's tenant must carry."""
    if not row.eam_tenant_id:
        return None
    return row.eam_issuer or ENTRA_ISSUER.format(tid=row.eam_tenant_id)


def add(
    session: Session, body: Mapping[str, Any], *, actor: str | None = None
) -> tuple[OidcClient, str | None]:
    """Register a client; returns it and its secret (None for a public or key client)."""
    client_id = body.get("client_id") or uuid.uuid4().hex
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise Invalid("invalid_client_id", "client_id is 1 to 128 of A-Z a-z 0-9 . _ : ~ -")
    if store.get_client(session, client_id) is not None:
        raise Conflict("client_exists", f"a client {client_id!r} exists already")
    row = OidcClient(
        client_id=client_id,
        name=client_id,
        enabled=True,
        mode="app",
        redirect_uris=[],
        post_logout_redirect_uris=[],
        token_auth_method="client_secret_basic",  # noqa: S106 - an auth method name
        claims=dict(DEFAULT_CLAIMS),
        acr="possessionorinherence",
        id_token_minutes=5,
        eam_hint_max_age=600,
        eam_user_match="external_id",
    )
    if "redirect_uris" not in body:
        raise Invalid("invalid_uri", "a client needs at least one redirect URI")
    _apply(row, {k: v for k, v in body.items() if k != "client_id"})
    _consistent(row)
    secret = None
    if row.token_auth_method in ("client_secret_basic", "client_secret_post"):
        secret = secrets.token_urlsafe(32)
        row.secret_hash = hash_secret(secret)
    store.add_client(session, row)
    audit.record(session, "oidc.client.add", "ok", actor=actor, details={"client_id": client_id})
    return row, secret


def get(session: Session, client_id: str) -> OidcClient:
    """The client, or ``NotFound``."""
    row = store.get_client(session, client_id) if isinstance(client_id, str) else None
    if row is None:
        raise NotFound("client_not_found", f"no OIDC client {client_id!r}")
    return row


def update(
    session: Session,
    client_id: str,
    body: Mapping[str, Any],
    *,
    rotate_secret: bool = False,
    actor: str | None = None,
) -> tuple[OidcClient, str | None]:
    """Change a client's settings; returns it and a new secret if one was made."""
    row = get(session, client_id)
    if "client_id" in body and body["client_id"] != client_id:
        raise Invalid("invalid_client_id", "a client's id cannot change; add a new client")
    _apply(row, body)
    _consistent(row)
    secret = None
    if row.token_auth_method in ("client_secret_basic", "client_secret_post"):
        if rotate_secret or row.secret_hash is None:
            secret = secrets.token_urlsafe(32)
            row.secret_hash = hash_secret(secret)
    else:
        row.secret_hash = None
    session.flush()
    audit.record(
        session,
        "oidc.client.update",
        "ok",
        actor=actor,
        details={
            "client_id": client_id,
            "fields": sorted(body),
            "secret_rotated": secret is not None,
        },
    )
    return row, secret


def remove(session: Session, client_id: str, *, actor: str | None = None) -> None:
    """Delete a client (its access tokens go with it)."""
    row = get(session, client_id)
    store.remove_client(session, row)
    audit.record(session, "oidc.client.remove", "ok", actor=actor, details={"client_id": client_id})


def list_all(session: Session) -> list[OidcClient]:
    """Every client."""
    return store.list_clients(session)


def to_json(row: OidcClient) -> dict[str, Any]:
    """A client as the CLI and the API show it (never the secret or its hash)."""
    return {
        "client_id": row.client_id,
        "name": row.name,
        "enabled": row.enabled,
        "mode": row.mode,
        "redirect_uris": list(row.redirect_uris),
        "post_logout_redirect_uris": list(row.post_logout_redirect_uris or []),
        "token_auth_method": row.token_auth_method,
        "has_secret": row.secret_hash is not None,
        "jwks": row.jwks,
        "claims": dict(row.claims),
        "acr": row.acr,
        "id_token_minutes": row.id_token_minutes,
        "eam_tenant_id": row.eam_tenant_id,
        "eam_issuer": issuer_of_tenant(row),
        "eam_jwks_url": row.eam_jwks_url,
        "eam_hint_max_age": row.eam_hint_max_age,
        "eam_user_match": row.eam_user_match,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def snapshot(row: OidcClient) -> dict[str, Any]:
    """What a sign-in keeps of its client, frozen in the transaction's context."""
    return {
        "client_id": row.client_id,
        "name": row.name,
        "mode": row.mode,
        "claims": dict(row.claims),
        "acr": row.acr,
        "id_token_minutes": row.id_token_minutes,
    }


# ---- JSON functions over the database: the layer under the admin API and the console --------


def list_json(db: Database) -> list[dict[str, Any]]:
    """Every client, as JSON."""
    with db.read_session() as s:
        return [to_json(r) for r in list_all(s)]


def get_json(db: Database, client_id: str) -> dict[str, Any]:
    """One client, as JSON (``client_not_found`` 404)."""
    with db.read_session() as s:
        return to_json(get(s, client_id))


def add_json(db: Database, body: Mapping[str, Any], *, actor: str | None) -> dict[str, Any]:
    """Register a client; the JSON carries ``client_secret`` once, when one was made."""
    with db.session() as s:
        row, secret = add(s, body, actor=actor)
        data = to_json(row)
    return {**data, "client_secret": secret} if secret else data


def update_json(
    db: Database,
    client_id: str,
    body: Mapping[str, Any],
    *,
    rotate_secret: bool = False,
    actor: str | None,
) -> dict[str, Any]:
    """Change a client; the JSON carries a new ``client_secret`` when one was made."""
    with db.session() as s:
        row, secret = update(s, client_id, body, rotate_secret=rotate_secret, actor=actor)
        data = to_json(row)
    return {**data, "client_secret": secret} if secret else data


def remove_json(db: Database, client_id: str, *, actor: str | None) -> dict[str, Any]:
    """Remove a client."""
    with db.session() as s:
        remove(s, client_id, actor=actor)
    return {"removed": client_id}
