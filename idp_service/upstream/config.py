"""The upstream IdPs: read from the TOML file that ``DEVICETRUST_UPSTREAM_IDPS`` names.

One ``[[idp]]`` table per IdP::

    [[idp]]
    id = "okta"                       # short name, in URLs and the audit log
    name = "Okta"                     # what the login page's button says
    issuer = "https://example.okta.com"
    client_id = "0oa..."
    client_secret_file = "/etc/devicetrust/okta-secret"   # or client_secret = "..."
    claim = "email"   # sub | oid -> externalId; email | preferred_username -> userName
    scopes = "openid email profile"
    group = ""                        # optional: only members of this SCIM group
    console = false                   # true: the admin console's sign-in goes through it

A bad file stops the service at start with a :class:`ConfigError` naming the
file, the IdP and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from idp_service.platform.config import ConfigError

VARIABLE = "DEVICETRUST_UPSTREAM_IDPS"

# Which SCIM attribute each claim is matched against.
CLAIM_TARGET: dict[str, str] = {
    "sub": "externalId",
    "oid": "externalId",
    "email": "userName",
    "preferred_username": "userName",
}


class _IdpInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = Field(min_length=1, max_length=64)
    issuer: str = Field(min_length=1, max_length=512)
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str | None = None
    client_secret_file: str | None = None
    claim: Literal["sub", "oid", "email", "preferred_username"] = "email"
    scopes: str = "openid email profile"
    group: str = ""
    leeway: int = Field(default=120, ge=0, le=600)  # seconds of clock skew allowed
    max_age: int = Field(default=600, ge=30, le=3600)  # an ID token older than this is refused
    jwks_min_refresh: float = Field(default=60.0, ge=0, le=3600)  # between JWKS refetches
    timeout: float = Field(default=10.0, gt=0, le=60)
    console: bool = False  # the admin console's sign-in goes through this IdP first

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("must be an https:// URL (http only on loopback, for tests)")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("must include openid")
        return value


@dataclass(frozen=True)
class UpstreamIdp:
    """One configured upstream IdP."""

    id: str
    name: str
    issuer: str
    client_id: str
    client_secret: str
    claim: str
    scopes: str
    group: str
    leeway: int
    max_age: int
    jwks_min_refresh: float
    timeout: float
    console: bool = False

    @property
    def target(self) -> str:
        """The SCIM attribute the claim is matched against: ``externalId`` or ``userName``."""
        return CLAIM_TARGET[self.claim]

    def __repr__(self) -> str:  # never the secret
        return f"UpstreamIdp(id={self.id!r}, issuer={self.issuer!r})"


def parse(data: dict[str, Any], source: str) -> tuple[UpstreamIdp, ...]:
    """The IdPs described by ``data`` (a parsed TOML document); ``source`` names it in errors."""
    tables = data.get("idp", [])
    extra = set(data) - {"idp"}
    if extra or not isinstance(tables, list):
        raise ConfigError(VARIABLE, f"{source}: write one [[idp]] table per upstream IdP")
    found: list[UpstreamIdp] = []
    for index, table in enumerate(tables):
        where = f"{source}: [[idp]] #{index + 1}"
        try:
            given = _IdpInput.model_validate(table)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(p) for p in error.get("loc", ())) or "?"
            raise ConfigError(VARIABLE, f"{where}: {key}: {error.get('msg', 'invalid')}") from None
        secret = given.client_secret
        if given.client_secret_file:
            try:
                secret = Path(given.client_secret_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    VARIABLE, f"{where}: cannot read client_secret_file ({exc.strerror or exc})"
                ) from None
        if not secret:
            raise ConfigError(VARIABLE, f"{where}: set client_secret or client_secret_file")
        if any(idp.id == given.id for idp in found):
            raise ConfigError(VARIABLE, f"{where}: id {given.id!r} is used twice")
        found.append(
            UpstreamIdp(
                id=given.id,
                name=given.name,
                issuer=given.issuer,
                client_id=given.client_id,
                client_secret=secret,
                claim=given.claim,
                scopes=given.scopes,
                group=given.group.strip(),
                leeway=given.leeway,
                max_age=given.max_age,
                jwks_min_refresh=given.jwks_min_refresh,
                timeout=given.timeout,
                console=given.console,
            )
        )
    if sum(idp.console for idp in found) > 1:
        raise ConfigError(VARIABLE, f"{source}: at most one [[idp]] may set console = true")
    return tuple(found)


def load(path: str) -> tuple[UpstreamIdp, ...]:
    """The IdPs in the TOML file at ``path``; none when ``path`` is empty."""
    if not path:
        return ()
    try:
        data = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            VARIABLE, f"{VARIABLE}={path!r}: cannot read the file ({exc.strerror or exc})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(VARIABLE, f"{path}: not a valid TOML file ({exc})") from None
    return parse(data, path)
