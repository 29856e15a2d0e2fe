"""Per-process SAML state kept in the service context: the key ring and the NameID secret.

Both are loaded once per process (``ctx().extras``), never per request.
"""

from __future__ import annotations

from idp_service.platform.keys import load_secret
from idp_service.saml.keys import KeyRing, keyring
from idp_service.saml.protocol.metadata import entity_id, sso_url
from idp_service.services import ServiceContext

PERSISTENT_SECRET = "saml.persistent_nameid"  # noqa: S105 - a row name, not a secret


def keys(service: ServiceContext) -> KeyRing:
    """The process's signing key ring."""
    return keyring(service.extras, service.db)


def persistent_secret(service: ServiceContext) -> bytes:
    """The HMAC key of persistent NameIDs, shared by every replica."""
    secret = service.extras.get(PERSISTENT_SECRET)
    if secret is None:
        secret = service.extras.setdefault(
            PERSISTENT_SECRET, load_secret(service.db, PERSISTENT_SECRET)
        )
    return secret


def idp_entity_id(service: ServiceContext) -> str:
    """This IdP's entityID."""
    return entity_id(service.settings.public_url)


def idp_sso_url(service: ServiceContext) -> str:
    """This IdP's SSO endpoint."""
    return sso_url(service.settings.public_url)
