"""The provider's rules without the web: discovery, the authorize request's checks,
the token endpoint, userinfo, RP-initiated logout, and signing id_tokens.

``oidc/web.py`` reads each request into plain values and calls these; they
return plain values or raise :class:`~idp_service.oidc.errors.OidcError`. The
JOSE parts (signing, verifying client assertions and our own hints) go
through joserfc. Codes and access tokens are random 256-bit values stored as
SHA-256 hashes; every secret comparison is constant time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp_service.oidc import clients, eam, store
from idp_service.oidc.errors import OidcError
from idp_service.oidc.keys import KeyRing
from idp_service.oidc.tables import OidcAccessToken, OidcClient
from idp_service.platform import audit
from idp_service.services import Services

CODE_LIFETIME = dt.timedelta(seconds=60)
TOKEN_LIFETIME = dt.timedelta(minutes=10)
MAX_PARAM = 2048
MAX_CLAIMS_PARAM = 4096
VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of SHA-256, no padding
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_ALGS = ["RS256", "PS256", "ES256"]
ASSERTION_SKEW = 60  # seconds a client's clock may run ahead of ours (an assertion's nbf)
SCOPES = ("openid", "profile", "email")
AUTH_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "login_hint",
    "id_token_hint",
    "claims",
    "max_age",
    "ui_locales",
    "acr_values",
    "request",
    "request_uri",
    "display",
)


def issuer(svc: Services) -> str:
    """This provider's issuer: the ``iss`` of every token, exactly."""
    return svc.settings.public_url.rstrip("/") + "/oidc"


def keys(svc: Services) -> KeyRing:
    """The process's signing key ring (made by ``oidc/web.py`` init_app)."""
    ring = svc.oidc_keys
    if ring is None:
        ring = svc.oidc_keys = KeyRing(svc.db)
    if not isinstance(ring, KeyRing):
        raise TypeError("Services.oidc_keys must be an oidc.keys.KeyRing")
    return ring


def hint_keys(svc: Services) -> eam.HintKeys:
    """The process's cache of Entra tenants' signing keys."""
    cache = svc.oidc_hint_keys
    if cache is None:
        cache = svc.oidc_hint_keys = eam.HintKeys()
    if not isinstance(cache, eam.HintKeys):
        raise TypeError("Services.oidc_hint_keys must be an oidc.eam.HintKeys")
    return cache


def discovery(svc: Services) -> dict[str, Any]:
    """The ``/.well-known/openid-configuration`` document."""
    iss = issuer(svc)
    return {
        "issuer": iss,
        "authorization_endpoint": iss + "/authorize",
        "token_endpoint": iss + "/token",
        "userinfo_endpoint": iss + "/userinfo",
        "jwks_uri": iss + "/jwks",
        "end_session_endpoint": iss + "/logout",
        "response_types_supported": ["code", "id_token"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [m for m in clients.AUTH_METHODS],
        "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr"]
        + ["preferred_username", "email", "name", "groups", "device_id", "device_posture"],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


def device_amr(device_sign_key_storage: str | None = None) -> str:
    """The ``amr`` of the device factor that answered: ``hwk`` only for a hardware-bound key.

    Today's agents keep their Ed25519 key in a file protected by the operating
    system (``agent/``), not in a TPM or Secure Enclave, so every answer is
    ``swk``; an agent that proves a hardware-bound key would report it here.
    """
    return "hwk" if device_sign_key_storage == "hardware" else "swk"


# ---- authorize -----------------------------------------------------------------------------


@dataclass
class Reply:
    """Where an authorize error may go back to (known once client and redirect URI are good)."""

    redirect_uri: str | None = None
    response_mode: str = "query"
    state: str | None = None


@dataclass
class Accepted:
    """An authorize request that passed every check: the sign-in's context."""

    client: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)


def _one(params: dict[str, list[str]], name: str, limit: int = MAX_PARAM) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise OidcError("oidc_malformed", f"{name} is repeated")
    value = values[0]
    if len(value) > limit:
        raise OidcError("oidc_too_large", f"{name} is too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise OidcError("oidc_malformed", f"{name} holds control characters")
    return value


def check_authorize(svc: Services, params: dict[str, list[str]], reply: Reply) -> Accepted:
    """Check an authorize request; fills ``reply`` as soon as errors may go back to the client.

    Before the client and its redirect URI are known good every refusal is an
    error page (no redirect anywhere); after, it goes back to the exact
    registered URI with ``state``.
    """
    client_id = _one(params, "client_id", 128)
    redirect_uri = _one(params, "redirect_uri")
    if not client_id:
        raise OidcError("oidc_unknown_client", "no client_id", status=400)
    with svc.db.read_session() as s:
        row = store.get_client(s, client_id)
        if row is None:
            raise OidcError("oidc_unknown_client", status=400)
        snapshot = clients.snapshot(row)
        registered = list(row.redirect_uris)
        enabled = row.enabled
        public = row.token_auth_method == "none"  # noqa: S105 - an auth method name
        tenant = _tenant(row)
    if not redirect_uri or redirect_uri not in registered:
        raise OidcError("oidc_redirect_uri_mismatch", status=400)
    if not enabled:
        raise OidcError("oidc_client_disabled", status=403)
    state = _one(params, "state", 1024)
    response_mode = _one(params, "response_mode") or ""
    reply.redirect_uri, reply.state = redirect_uri, state
    reply.response_mode = "form_post" if response_mode == "form_post" else "query"
    response_type = _one(params, "response_type")
    if _one(params, "request") is not None or _one(params, "request_uri") is not None:
        raise OidcError("oidc_request_not_supported", error="request_not_supported", redirect=True)
    factor = snapshot["mode"] == "factor"
    if response_type == "code":
        if response_mode not in ("", "query", "form_post"):
            raise OidcError("oidc_malformed", "response_mode is query or form_post", redirect=True)
    elif response_type == "id_token" and factor:
        reply.response_mode = "form_post"
        if response_mode != "form_post":
            raise OidcError("oidc_malformed", "id_token goes back by form_post", redirect=True)
    else:
        raise OidcError(
            "oidc_unsupported_response_type", error="unsupported_response_type", redirect=True
        )
    scope = _one(params, "scope") or ""
    scopes = scope.split()
    if "openid" not in scopes:
        raise OidcError("oidc_invalid_scope", error="invalid_scope", redirect=True)
    nonce = _one(params, "nonce", 512)
    if response_type == "id_token" and not nonce:
        raise OidcError("oidc_nonce_required", redirect=True)
    if response_type == "id_token" and not state:
        raise OidcError("oidc_state_required", redirect=True)
    challenge = _one(params, "code_challenge", 128)
    method = _one(params, "code_challenge_method")
    if response_type == "code":
        if challenge is None and public:
            raise OidcError("oidc_pkce_required", redirect=True)
        if challenge is not None:
            if method != "S256":
                raise OidcError("oidc_pkce_method", redirect=True)
            if not CHALLENGE.match(challenge):
                raise OidcError(
                    "oidc_malformed", "code_challenge is base64url of SHA-256", redirect=True
                )
    elif challenge is not None:
        raise OidcError("oidc_malformed", "no PKCE without a code", redirect=True)
    prompt = (_one(params, "prompt") or "").split()
    if "none" in prompt:
        raise OidcError("oidc_login_required", error="login_required", redirect=True)
    _one(params, "claims", MAX_CLAIMS_PARAM)  # accepted and bounded; we always send acr and amr
    login_hint = _one(params, "login_hint", 256)
    hint_token = _one(params, "id_token_hint", eam.MAX_HINT)
    context: dict[str, Any] = {
        "client": snapshot,
        "sp_name": snapshot["name"],
        "redirect_uri": redirect_uri,
        "response_type": response_type,
        "response_mode": reply.response_mode,
        "state": state,
        "nonce": nonce,
        "scope": " ".join(s for s in scopes if s in SCOPES),
        "code_challenge": challenge,
        "hint": None,
        "broker_subject": None,
        "broker_user_id": None,
        "tofu_subject": None,
    }
    if tenant is not None:
        if not hint_token:
            raise OidcError("oidc_hint_required", redirect=True)
        hint = eam.verify_hint(hint_keys(svc), tenant, hint_token)
        with svc.db.read_session() as s:
            user = eam.map_user(s, tenant, hint)
            context.update(
                hint={"sub": hint.sub, "oid": hint.oid, "tid": hint.tid},
                broker_user_id=user.id,
                broker_subject=user.user_name,
                tofu_subject=user.user_name,
            )
    elif factor and login_hint:
        context.update(broker_subject=login_hint)
    return Accepted(client=snapshot, context=context)


def _tenant(row: OidcClient) -> eam.Tenant | None:
    iss = clients.issuer_of_tenant(row)
    if row.mode != "factor" or not row.eam_tenant_id or not row.eam_jwks_url or iss is None:
        return None
    return eam.Tenant(
        client_id=row.client_id,
        tenant_id=row.eam_tenant_id,
        issuer=iss,
        jwks_url=row.eam_jwks_url,
        max_age=row.eam_hint_max_age,
        user_match=row.eam_user_match,
    )


# ---- tokens --------------------------------------------------------------------------------


def digest(value: str) -> str:
    """SHA-256 hex of a code or token (what the tables keep)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret() -> str:
    """A fresh code or access token: 256 random bits, base64url."""
    return secrets.token_urlsafe(32)


def half_hash(value: str) -> str:
    """``at_hash``: base64url of the left half of SHA-256 (RS256's hash)."""
    left = hashlib.sha256(value.encode("ascii")).digest()[:16]
    return base64.urlsafe_b64encode(left).rstrip(b"=").decode()


def sign(svc: Services, claims: dict[str, Any]) -> str:
    """An RS256 JWT over ``claims``, signed by the active key (``kid`` in its header)."""
    key = keys(svc).active()
    return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key.jwk)


def id_token_claims(
    svc: Services,
    *,
    client: dict[str, Any],
    sub: str,
    nonce: str | None,
    auth_time: int,
    amr: str,
    extra: dict[str, Any],
    now: int | None = None,
) -> dict[str, Any]:
    """The id_token's claims: exactly one ``acr``, an ``amr`` array of one value."""
    now = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer(svc),
        "sub": sub,
        "aud": client["client_id"],
        "iat": now,
        "exp": now + 60 * int(client["id_token_minutes"]),
        "auth_time": auth_time,
        "acr": client["acr"],
        "amr": [amr],
    }
    if nonce is not None:
        claims["nonce"] = nonce
    claims.update(extra)
    return claims


@dataclass(frozen=True)
class ClientAuth:
    """How the token request authenticated its client (read by the web layer)."""

    basic: tuple[str, str] | None
    client_id: str | None
    client_secret: str | None
    assertion_type: str | None
    assertion: str | None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic`` as (client id, secret), form-decoded (RFC 6749 2.3.1)."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error), non-ASCII text, or not UTF-8
        raise OidcError(
            "oidc_invalid_client",
            "unreadable Basic credentials",
            error="invalid_client",
            status=401,
        ) from None
    if ":" not in raw:
        raise OidcError(
            "oidc_invalid_client",
            "Basic credentials need id:secret",
            error="invalid_client",
            status=401,
        )
    cid, secret = raw.split(":", 1)
    return unquote_plus(cid), unquote_plus(secret)


def _authenticate(svc: Services, row: OidcClient | None, auth: ClientAuth) -> None:
    """Raise ``invalid_client`` unless the request used the client's one method, correctly."""
    fail = OidcError("oidc_invalid_client", error="invalid_client", status=401)
    if row is None or not row.enabled:
        raise fail
    method = row.token_auth_method
    if method == "client_secret_basic":
        if auth.basic is None or auth.client_secret is not None or auth.assertion is not None:
            raise fail
        return _secret_ok(row, auth.basic[1], fail)
    if method == "client_secret_post":
        if auth.basic is not None or auth.client_secret is None or auth.assertion is not None:
            raise fail
        return _secret_ok(row, auth.client_secret, fail)
    if method == "none":
        if auth.basic is not None or auth.client_secret is not None or auth.assertion is not None:
            raise fail
        return None
    if method == "private_key_jwt":
        if (
            auth.assertion_type != ASSERTION_TYPE
            or not auth.assertion
            or auth.basic is not None
            or auth.client_secret is not None  # one method per request (RFC 6749 2.3)
        ):
            raise fail
        return _assertion_ok(svc, row, auth.assertion, fail)
    raise fail


def _secret_ok(row: OidcClient, secret: str, fail: OidcError) -> None:
    expected = row.secret_hash or ""
    if (
        not hmac.compare_digest(clients.hash_secret(secret).encode(), expected.encode())
        or not expected
    ):
        raise fail


def _not_before_ok(nbf: Any, now: float) -> bool:
    """An assertion's ``nbf`` has come (RFC 7523 §3), allowing :data:`ASSERTION_SKEW`."""
    return (
        isinstance(nbf, int | float)
        and not isinstance(nbf, bool)
        and math.isfinite(nbf)
        and nbf <= now + ASSERTION_SKEW
    )


def _assertion_ok(svc: Services, row: OidcClient, assertion: str, fail: OidcError) -> None:
    if len(assertion) > 8192 or not row.jwks:
        raise fail
    try:
        keyset = KeySet.import_key_set(row.jwks)  # type: ignore[arg-type]
        token = jwt.decode(assertion, keyset, algorithms=CLIENT_ASSERTION_ALGS)
    except (JoseError, ValueError, TypeError):
        raise fail from None
    c = token.claims
    now = time.time()
    aud = c.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    endpoint = issuer(svc) + "/token"
    if (
        c.get("iss") != row.client_id
        or c.get("sub") != row.client_id
        or not (endpoint in auds or issuer(svc) in auds)
        or not isinstance(c.get("exp"), int | float)
        or not math.isfinite(c["exp"])  # JSON as Python reads it allows NaN and Infinity
        or c["exp"] < now
        or c["exp"] > now + 600
        or not _not_before_ok(c.get("nbf", now), now)
    ):
        raise fail
    # Single use (OpenID Connect Core §9): the jti is required, and spent before the
    # assertion authenticates anything; a second use of the same assertion is a copy.
    jti = c.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise fail
    row_id = hashlib.sha256(f"{row.client_id}\0{jti}".encode()).hexdigest()
    expires = dt.datetime.fromtimestamp(float(c["exp"]), dt.UTC)
    with svc.db.session() as s:
        if not store.spend_assertion(s, row_id, row.client_id, expires):
            raise OidcError(
                "oidc_assertion_replayed",
                "this client assertion was used before",
                error="invalid_client",
                status=401,
            )


def token(
    svc: Services, form: dict[str, list[str]], auth: ClientAuth, remote_addr: str | None
) -> dict[str, Any]:
    """The token endpoint: one authorization code for an id_token and an access token."""
    grant_type = _one(form, "grant_type")
    code = _one(form, "code", 256)
    redirect_uri = _one(form, "redirect_uri")
    verifier = _one(form, "code_verifier", 256)
    client_id = auth.basic[0] if auth.basic is not None else auth.client_id
    if auth.basic is not None and auth.client_id is not None and auth.client_id != auth.basic[0]:
        raise OidcError(
            "oidc_invalid_client", "two different client ids", error="invalid_client", status=401
        )
    if auth.assertion is not None and client_id is None:
        client_id = _assertion_subject(auth.assertion)
    if not client_id or not clients.CLIENT_ID.fullmatch(client_id):
        # No registered client has such an id; and PostgreSQL refuses a NUL in a query.
        raise OidcError("oidc_invalid_client", error="invalid_client", status=401)
    with svc.db.read_session() as s:
        row = store.get_client(s, client_id)
        _authenticate(svc, row, auth)
        assert row is not None
        public = row.token_auth_method == "none"  # noqa: S105 - an auth method name
    if grant_type != "authorization_code":
        raise OidcError("oidc_unsupported_grant_type", error="unsupported_grant_type")
    if not code:
        raise OidcError("oidc_malformed", "no code")
    now = svc.clock()
    code_hash = digest(code)
    refusal: OidcError | None = None
    details: dict[str, Any] = {"client_id": client_id}
    with svc.db.session() as s:
        found = store.redeem_code(s, code_hash, client_id, now)
        if found is None:
            used = store.find_code(s, code_hash)
            if used is not None and used.client_id == client_id and used.used_at is not None:
                revoked = store.revoke_tokens_of_code(s, code_hash, now)
                refusal = OidcError("oidc_code_reused", error="invalid_grant")
                details["revoked_tokens"] = revoked
                audit.record(
                    s,
                    "oidc.token",
                    "rejected",
                    code=refusal.code,
                    user_id=used.user_id,
                    device_id=used.device_id,
                    remote_addr=remote_addr,
                    details=details,
                )
            else:
                refusal = OidcError("oidc_invalid_grant", error="invalid_grant")
        elif redirect_uri != found.redirect_uri:
            refusal = OidcError("oidc_invalid_grant", "redirect_uri differs", error="invalid_grant")
        elif found.code_challenge is not None or public:
            expected = found.code_challenge or ""
            sent = ""
            if verifier is not None and VERIFIER.match(verifier):
                sent = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
            if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
                refusal = OidcError("oidc_pkce_mismatch", error="invalid_grant")
        elif verifier is not None:
            refusal = OidcError(
                "oidc_pkce_mismatch", "a verifier without a challenge", error="invalid_grant"
            )
        if found is not None and refusal is not None:
            # The code is spent either way: a stolen code gets one guess at the verifier.
            audit.record(
                s,
                "oidc.token",
                "rejected",
                code=refusal.code,
                user_id=found.user_id,
                device_id=found.device_id,
                remote_addr=remote_addr,
                details=details,
            )
        if refusal is None and found is not None:
            access = new_secret()
            claims = dict(found.claims)
            id_claims = dict(claims["id_token"])
            id_claims["at_hash"] = half_hash(access)
            iat = int(time.time())
            id_claims["iat"] = iat
            id_claims["exp"] = iat + (id_claims["exp"] - claims["id_token"]["iat"])
            store.add_token(
                s,
                OidcAccessToken(
                    token_hash=digest(access),
                    code_hash=code_hash,
                    client_id=client_id,
                    user_id=found.user_id,
                    claims=claims["userinfo"],
                    issued_at=now,
                    expires_at=now + TOKEN_LIFETIME,
                ),
            )
            audit.record(
                s,
                "oidc.token",
                "ok",
                user_id=found.user_id,
                device_id=found.device_id,
                remote_addr=remote_addr,
                details=details,
            )
            scope = found.scope
    if refusal is not None:
        if found is None and refusal.code != "oidc_code_reused":
            audit.record_separately(
                svc.db,
                "oidc.token",
                "rejected",
                code=refusal.code,
                remote_addr=remote_addr,
                details=details,
            )
        raise refusal
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(TOKEN_LIFETIME.total_seconds()),
        "id_token": sign(svc, id_claims),
        "scope": scope,
    }


def _assertion_subject(assertion: str) -> str | None:
    """The unverified ``sub`` of a client assertion (only to find the client's keys)."""
    try:
        from joserfc import jws

        body = jws.extract_compact(assertion.encode()).payload
        import json

        sub = json.loads(body).get("sub")
    except (JoseError, ValueError, TypeError, AttributeError):
        return None
    return sub if isinstance(sub, str) else None


def userinfo(svc: Services, authorization: str | None) -> dict[str, Any]:
    """The claims of a live access token (``Authorization: Bearer``)."""
    if not authorization or authorization[:7].lower() != "bearer ":
        raise OidcError("oidc_invalid_token", error="invalid_token", status=401)
    value = authorization[7:].strip()
    if not value or len(value) > 256:
        raise OidcError("oidc_invalid_token", error="invalid_token", status=401)
    with svc.db.read_session() as s:
        claims = store.live_token(s, digest(value), svc.clock())
    if claims is None:
        raise OidcError("oidc_invalid_token", error="invalid_token", status=401)
    return claims


def logout(svc: Services, params: dict[str, list[str]]) -> str | None:
    """RP-initiated logout: revoke the user's tokens at the client; where to send the browser.

    ``id_token_hint`` must be one of our id_tokens (signature checked, expiry
    not: it is usually expired by now). ``post_logout_redirect_uri`` must match
    one the client registered exactly; ``state`` is echoed. Returns the URL to
    redirect to, or None to show the signed-out page.
    """
    hint = _one(params, "id_token_hint", eam.MAX_HINT)
    target = _one(params, "post_logout_redirect_uri")
    client_id = _one(params, "client_id", 128)
    state = _one(params, "state", 1024)
    claims: dict[str, Any] | None = None
    if hint:
        published = KeySet([k.jwk for k in keys(svc).published()])
        try:
            claims = jwt.decode(hint, published, algorithms=["RS256"]).claims
        except (JoseError, ValueError, TypeError):
            raise OidcError("oidc_logout_invalid", "the id_token_hint does not verify") from None
        if claims.get("iss") != issuer(svc):
            raise OidcError("oidc_logout_invalid", "the id_token_hint is not ours")
        aud = claims.get("aud")
        if client_id is not None and aud != client_id:
            raise OidcError("oidc_logout_invalid", "client_id and id_token_hint disagree")
        client_id = aud if isinstance(aud, str) else None
    if target is not None and not client_id:
        raise OidcError("oidc_logout_invalid", "name the client (client_id or id_token_hint)")
    with svc.db.session() as s:
        row = store.get_client(s, client_id) if client_id else None
        if client_id and row is None:
            raise OidcError("oidc_logout_invalid", "unknown client")
        if target is not None and (
            row is None or target not in (row.post_logout_redirect_uris or [])
        ):
            raise OidcError("oidc_logout_invalid", "post_logout_redirect_uri is not registered")
        if claims is not None and row is not None:
            user_id = claims.get("sub")
            revoked = store.revoke_tokens_of_user(s, row.client_id, str(user_id), svc.clock())
            audit.record(
                s,
                "oidc.logout",
                "ok",
                details={"client_id": row.client_id, "revoked_tokens": revoked},
            )
    if target is None:
        return None
    if state is not None:
        from urllib.parse import urlencode

        target += ("&" if "?" in target else "?") + urlencode({"state": state})
    return target
