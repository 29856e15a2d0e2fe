"""What a sign-in reads off a registered SP: the ACS to answer at, and its settings.

:func:`resolve_acs` picks the AssertionConsumerService a Response goes to from the
SP's own metadata endpoints (never a prefix, wildcard or host match);
:func:`snapshot` freezes the settings a Response needs into the login transaction.
Both read a :class:`~idp_service.saml.tables.ServiceProvider` row already loaded
(no query); the registry (``idp_service/saml/registry.py``), which writes those
rows, re-exports them.
"""

from __future__ import annotations

from typing import Any

from idp_service.saml.errors import SamlError
from idp_service.saml.protocol.constants import BINDING_POST
from idp_service.saml.tables import ServiceProvider


def snapshot(sp: ServiceProvider) -> dict[str, Any]:
    """The settings a Response needs, frozen into the login transaction when the request is
    accepted (so completing a sign-in needs no second registry read; a settings change
    applies from the next sign-in)."""
    return {
        "id": sp.id,
        "name": sp.name,
        "nameid_format": sp.nameid_format,
        "attributes": dict(sp.attributes or {}),
        "sign_response": sp.sign_response,
        "sign_assertion": sp.sign_assertion,
        "signature_algorithm": sp.signature_algorithm,
        "encrypt_cert": (sp.encryption_certs or [None])[0] if sp.encrypt_assertion else None,
        "session_minutes": sp.session_minutes,
        "requested_authn_context": sp.requested_authn_context,
    }


def resolve_acs(
    sp: ServiceProvider,
    *,
    url: str | None = None,
    index: int | None = None,
    binding: str | None = None,
) -> str:
    """The ACS URL to answer at: by index, or by exact URL plus binding, or the default.

    No prefix, wildcard or host matching: anything not in the metadata is refused. Only
    HTTP-POST endpoints count, whichever way one is picked: a stored endpoint with
    another binding (a row written by hand) is never answered.
    """
    endpoints = [ep for ep in sp.acs or [] if ep.get("binding") == BINDING_POST]
    if binding is not None and binding != BINDING_POST:
        raise SamlError("saml_unsupported_binding", "responses are sent with HTTP-POST only")
    if url is not None and index is not None:
        raise SamlError("saml_malformed", "AssertionConsumerServiceURL and Index are exclusive")
    if index is not None:
        for ep in endpoints:
            if ep["index"] == index:
                return str(ep["location"])
        raise SamlError("saml_acs_mismatch", f"no ACS with index {index}")
    if url is not None:
        for ep in endpoints:
            if ep["location"] == url:
                return url
        raise SamlError("saml_acs_mismatch", "the ACS URL is not in the SP's metadata")
    if not endpoints:
        raise SamlError("saml_acs_mismatch", "the SP has no HTTP-POST ACS")
    # SAML metadata: the first isDefault="true", else the first not marked false, else the first.
    for ep in endpoints:
        if ep.get("is_default") is True:
            return str(ep["location"])
    for ep in endpoints:
        if ep.get("is_default") is None:
            return str(ep["location"])
    return str(endpoints[0]["location"])
