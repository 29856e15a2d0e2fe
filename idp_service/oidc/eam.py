"""Entra ID's ``id_token_hint``: verified against the tenant's keys, mapped to our user.

Microsoft Entra ID's External Authentication Methods send the user they want
checked as an ``id_token_hint``: RS256, signed by the tenant, *already expired*
when it arrives. A factor-mode client names its tenant (``clients.py``); this
module

* fetches the tenant's JWKS from the client's configured URL and keeps it per
  process (:class:`HintKeys`): refreshed after :data:`JWKS_TTL`, and at once when
  a hint names a key id the cached set does not hold (Entra rolls its keys),
  but at most once per :data:`REFETCH_MIN` per URL, so hostile hints cannot make
  us hammer the tenant;
* verifies the signature (RS256 only, through joserfc), ``iss`` (the tenant's
  issuer, exactly), ``aud`` (our client id), ``tid`` (the configured tenant),
  and the expiry within the client's stated bound (``eam_hint_max_age``
  seconds past ``exp``), with ``sub`` and ``oid`` present;
* maps it to our user by ``oid`` against ``externalId`` (what Entra's SCIM
  provisioning sends), falling back to ``preferred_username`` against
  ``userName`` when the client says so (``eam_user_match``).

Refusals are :class:`~idp_service.oidc.errors.OidcError` with stable codes;
this module imports no web framework.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.directory import users
from idp_service.oidc.errors import OidcError
from idp_service.platform.models import User

JWKS_TTL = 3600.0
REFETCH_MIN = 30.0
MAX_JWKS_BYTES = 256 * 1024
MAX_HINT = 16 * 1024
FUTURE_SKEW = 300  # seconds an iat may lie in the future


def _fetch(url: str) -> KeySet:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - http(s) URL checked at registration
        data = resp.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError("JWKS too large")
    doc = json.loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWK set")
    usable = [k for k in doc["keys"] if isinstance(k, dict) and k.get("kty") == "RSA"]
    return KeySet.import_key_set({"keys": usable})


class HintKeys:
    """The tenants' signing keys, per JWKS URL, cached with rotation (module doc)."""

    def __init__(
        self, fetch: Callable[[str], KeySet] = _fetch, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._sets: dict[str, tuple[KeySet, float]] = {}
        self._tried: dict[str, float] = {}

    def _refresh(self, url: str) -> KeySet | None:
        now = self._clock()
        with self._lock:
            last = self._tried.get(url)
            if last is not None and now - last < REFETCH_MIN:
                cached = self._sets.get(url)
                return cached[0] if cached else None
            self._tried[url] = now
        try:
            keys = self._fetch(url)
        except (OSError, ValueError, JoseError):
            cached = self._sets.get(url)
            return cached[0] if cached else None
        with self._lock:
            self._sets[url] = (keys, now)
        return keys

    def get(self, url: str, kid: str | None) -> KeySet | None:
        """The key set for ``url``, refetched when stale or missing ``kid``."""
        cached = self._sets.get(url)
        if cached is not None:
            keys, at = cached
            fresh = self._clock() - at < JWKS_TTL
            if fresh and (kid is None or any(k.kid == kid for k in keys.keys)):
                return keys
        return self._refresh(url)


@dataclass(frozen=True)
class Hint:
    """A verified hint: the claims the answer and the mapping need."""

    sub: str
    oid: str
    tid: str
    preferred_username: str | None


@dataclass(frozen=True)
class Tenant:
    """What a factor client configures about its Entra tenant."""

    client_id: str
    tenant_id: str
    issuer: str
    jwks_url: str
    max_age: int
    user_match: str


def verify_hint(keys: HintKeys, tenant: Tenant, token: str, now: float | None = None) -> Hint:
    """Verify an ``id_token_hint`` (module doc); ``OidcError`` with a stable code if refused."""
    now = time.time() if now is None else now
    if not isinstance(token, str) or len(token) > MAX_HINT or token.count(".") != 2:
        raise OidcError("oidc_hint_invalid", "not a compact JWS", redirect=True)
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, TypeError):
        raise OidcError("oidc_hint_invalid", "unreadable header", redirect=True) from None
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    if header.get("alg") != "RS256":
        raise OidcError("oidc_hint_invalid", "the hint is not RS256", redirect=True)
    keyset = keys.get(tenant.jwks_url, kid)
    if keyset is None:
        raise OidcError(
            "oidc_hint_keys_unavailable", error="temporarily_unavailable", status=502, redirect=True
        )
    if kid is None or not any(k.kid == kid for k in keyset.keys):
        raise OidcError(
            "oidc_hint_invalid", "signed by a key the tenant does not publish", redirect=True
        )
    try:
        decoded = jwt.decode(token, keyset, algorithms=["RS256"])
    except (JoseError, ValueError, TypeError):
        raise OidcError(
            "oidc_hint_invalid", "the signature does not verify", redirect=True
        ) from None
    claims: dict[str, Any] = decoded.claims
    if claims.get("iss") != tenant.issuer:
        raise OidcError("oidc_hint_invalid", "issued by another issuer", redirect=True)
    aud = claims.get("aud")
    if not (aud == tenant.client_id or (isinstance(aud, list) and aud == [tenant.client_id])):
        raise OidcError("oidc_hint_invalid", "issued for another audience", redirect=True)
    if claims.get("tid") != tenant.tenant_id:
        raise OidcError("oidc_hint_invalid", "issued by another tenant", redirect=True)
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise OidcError("oidc_hint_invalid", "no expiry", redirect=True)
    if now > exp + tenant.max_age:
        raise OidcError("oidc_hint_expired", redirect=True)
    if isinstance(iat, int | float) and iat > now + FUTURE_SKEW:
        raise OidcError("oidc_hint_invalid", "issued in the future", redirect=True)
    sub, oid = claims.get("sub"), claims.get("oid")
    if not (
        isinstance(sub, str)
        and 0 < len(sub) <= 256
        and isinstance(oid, str)
        and 0 < len(oid) <= 256
    ):
        raise OidcError("oidc_hint_invalid", "sub and oid are required", redirect=True)
    name = claims.get("preferred_username")
    return Hint(
        sub=sub,
        oid=oid,
        tid=tenant.tenant_id,
        preferred_username=name if isinstance(name, str) and len(name) <= 256 else None,
    )


def map_user(session: Session, tenant: Tenant, hint: Hint) -> User:
    """Our user for a verified hint; else ``user_unprovisioned`` or ``owner_inactive``."""
    found = session.scalars(select(User).where(User.external_id == hint.oid).limit(2)).all()
    user = found[0] if len(found) == 1 else None
    if (
        user is None
        and tenant.user_match == "external_id_then_username"
        and hint.preferred_username
    ):
        user = users.find(session, hint.preferred_username)
    if user is None:
        raise OidcError("user_unprovisioned", error="access_denied", status=403, redirect=True)
    if not user.active:
        raise OidcError("owner_inactive", error="access_denied", status=403, redirect=True)
    return user
