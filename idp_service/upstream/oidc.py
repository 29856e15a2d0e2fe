"""The relying party's protocol half: discovery, the code flow, and the ID token's checks.

authlib's ``OAuth2Session`` builds the authorization URL (PKCE S256, ``state``,
``nonce``) and exchanges the code (``client_secret_basic``); joserfc checks the
ID token's signature and claims. Nothing here touches the database.

Key rotation: the provider's JWKS is cached; a token signed under a ``kid`` the
cache does not hold makes one refetch (at most one per ``jwks_min_refresh``
seconds), so a provider that rotates its keys is followed without a restart,
and a token under a key the provider does not publish is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from idp_service.upstream.config import UpstreamIdp

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
DISCOVERY_TTL = 3600.0
MAX_DOCUMENT = 256 * 1024


class UpstreamFailure(Exception):
    """The provider could not be reached, or answered something unusable (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenRejected(Exception):
    """The ID token failed a check; ``reason`` names which (audit only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        resp = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException:
        raise UpstreamFailure("unreachable") from None
    if resp.status_code != 200 or len(resp.content) > MAX_DOCUMENT:
        raise UpstreamFailure(f"http_{resp.status_code}")
    try:
        data = resp.json()
    except ValueError:
        raise UpstreamFailure("not_json") from None
    if not isinstance(data, dict):
        raise UpstreamFailure("not_json")
    return data


@dataclass(frozen=True)
class Authorization:
    """What the relying party keeps of one authorization request."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class Provider:
    """One upstream IdP as a relying party sees it: metadata, keys and the flow."""

    def __init__(
        self, idp: UpstreamIdp, redirect_uri: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.idp = idp
        self.redirect_uri = redirect_uri
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = float("-inf")

    # -- discovery and keys ---------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for an hour); its issuer must match."""
        with self._lock:
            if self._metadata is not None and self._clock() - self._metadata_at < DISCOVERY_TTL:
                return self._metadata
        data = _get_json(self.idp.issuer + "/.well-known/openid-configuration", self.idp.timeout)
        if str(data.get("issuer", "")).rstrip("/") != self.idp.issuer:
            raise UpstreamFailure("issuer_mismatch")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(data.get(key), str):
                raise UpstreamFailure(f"no_{key}")
        with self._lock:
            self._metadata, self._metadata_at = data, self._clock()
        return data

    def _fetch_keys(self) -> KeySet:
        data = _get_json(self.metadata()["jwks_uri"], self.idp.timeout)
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise UpstreamFailure("bad_jwks") from None
        with self._lock:
            self._keys, self._keys_at = keys, self._clock()
        return keys

    def keys(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys; ``refresh`` refetches unless that was done just now."""
        with self._lock:
            cached, fetched_at = self._keys, self._keys_at
        if cached is not None and not refresh:
            return cached
        if cached is not None and self._clock() - fetched_at < self.idp.jwks_min_refresh:
            return cached
        return self._fetch_keys()

    # -- the code flow --------------------------------------------------------------------

    def _session(self) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.idp.client_id,
            client_secret=self.idp.client_secret,
            scope=self.idp.scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
        )

    def authorize(self, state: str, nonce: str, code_verifier: str) -> Authorization:
        """The authorization URL for a new request (PKCE S256, ``state`` and ``nonce``)."""
        endpoint = self.metadata()["authorization_endpoint"]
        with self._session() as session:
            url, _ = session.create_authorization_url(
                endpoint, state=state, nonce=nonce, code_verifier=code_verifier
            )
        return Authorization(url, state, nonce, code_verifier)

    def exchange(self, code: str, code_verifier: str) -> str:
        """Exchange the code for tokens at the token endpoint; return the ID token."""
        endpoint = self.metadata()["token_endpoint"]
        try:
            with self._session() as session:
                token = session.fetch_token(
                    endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                    timeout=self.idp.timeout,
                )
        except requests.RequestException:
            raise UpstreamFailure("token_unreachable") from None
        except Exception as exc:  # authlib's OAuthError and friends: the provider said no
            raise UpstreamFailure("token_refused:" + type(exc).__name__) from None
        id_token = token.get("id_token") if isinstance(token, dict) else None
        if not isinstance(id_token, str) or len(id_token) > 16384:
            raise UpstreamFailure("no_id_token")
        return id_token

    # -- the ID token ---------------------------------------------------------------------

    def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once every check passed; else :class:`TokenRejected`.

        Signature under the provider's JWKS (refetched once for an unknown key);
        ``iss`` is the issuer of the discovery document, exactly (the configured one,
        give or take a trailing ``/``); ``aud`` holds the client id, and with
        other audiences ``azp`` must be the client id; ``exp`` has not passed and
        ``iat`` is neither in the future nor older than ``max_age`` (both with the
        ``leeway`` for clocks); ``nonce`` is the one this request sent.
        """
        try:
            token = jwt.decode(id_token, self.keys(), algorithms=ALGORITHMS)
        except InvalidKeyIdError:
            try:
                token = jwt.decode(id_token, self.keys(refresh=True), algorithms=ALGORITHMS)
            except (InvalidKeyIdError, BadSignatureError):
                raise TokenRejected("signature") from None
            except (JoseError, ValueError):
                raise TokenRejected("malformed") from None
        except BadSignatureError:
            raise TokenRejected("signature") from None
        except (JoseError, ValueError):
            raise TokenRejected("malformed") from None
        claims = dict(token.claims)
        now = int(self._clock())
        # The issuer exactly as the discovery document publishes it (Discovery §3): the
        # configured one lost any trailing "/", which some providers' issuers end in.
        issuer = str(self.metadata()["issuer"])
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.idp.leeway,
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            aud={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRejected("exp") from None
        except (InvalidClaimError, MissingClaimError) as exc:
            raise TokenRejected(str(getattr(exc, "claim", "claims"))) from None
        except ClaimError:
            raise TokenRejected("claims") from None
        audience = claims["aud"]
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.idp.client_id not in audiences:
            raise TokenRejected("aud")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.idp.client_id:
            raise TokenRejected("azp")
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat < now - self.idp.max_age - self.idp.leeway:
            raise TokenRejected("iat")
        return claims
