"""Per-process SAML state kept on :class:`~idp_service.services.Services`: the key ring
and the persistent-NameID secret, loaded once per process, never per request.
"""

from __future__ import annotations

from idp_service.platform.keys import load_secret
from idp_service.saml.keys import KeyRing
from idp_service.saml.protocol.metadata import entity_id, sso_url
from idp_service.services import Services

PERSISTENT_SECRET = "saml.persistent_nameid"  # noqa: S105 - a row name, not a secret


def keys(service: Services) -> KeyRing:
    """The process's signing key ring (the app factory puts a :class:`KeyRing` there)."""
    ring = service.saml_keys
    if not isinstance(ring, KeyRing):
        raise TypeError("Services.saml_keys must be a saml.keys.KeyRing")
    return ring


def persistent_secret(service: Services) -> bytes:
    """The HMAC key of persistent NameIDs, shared by every replica."""
    secret = service.saml_persistent_secret
    if secret is None:
        secret = service.saml_persistent_secret = load_secret(service.db, PERSISTENT_SECRET)
    return secret


def idp_entity_id(service: Services) -> str:
    """This IdP's entityID."""
    return entity_id(service.settings.public_url)


def idp_sso_url(service: Services) -> str:
    """This IdP's SSO endpoint."""
    return sso_url(service.settings.public_url)
