"""The IdP's metadata document (``/saml/metadata``).

Lists every published signing certificate (the active key first, then a staged
*next* key and a *previous* key during a rollover), the supported NameID
formats, and the SSO endpoint for the HTTP-Redirect and HTTP-POST bindings.
"""

from __future__ import annotations

from lxml import etree

from idp_service.saml.keys import LoadedKey
from idp_service.saml.protocol.constants import (
    BINDING_POST,
    BINDING_REDIRECT,
    NAMEID_FORMATS,
    NS_DS,
    NS_MD,
)

PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
_MD = f"{{{NS_MD}}}"
_DS = f"{{{NS_DS}}}"


def entity_id(public_url: str) -> str:
    """The IdP's entityID (and the Issuer of everything it sends)."""
    return public_url + "/saml/metadata"


def sso_url(public_url: str) -> str:
    """The SSO endpoint, the same URL for both bindings (requests' Destination)."""
    return public_url + "/saml/sso"


def build(public_url: str, keys: list[LoadedKey], *, cache_seconds: int = 3600) -> bytes:
    """The EntityDescriptor for this IdP, publishing ``keys`` for signing."""
    root = etree.Element(
        _MD + "EntityDescriptor",
        nsmap={"md": NS_MD, "ds": NS_DS},
        entityID=entity_id(public_url),
        cacheDuration=f"PT{cache_seconds}S",
    )
    idp = etree.SubElement(
        root,
        _MD + "IDPSSODescriptor",
        WantAuthnRequestsSigned="false",
        protocolSupportEnumeration=PROTOCOL,
    )
    for key in keys:
        kd = etree.SubElement(idp, _MD + "KeyDescriptor", use="signing")
        info = etree.SubElement(kd, _DS + "KeyInfo")
        etree.SubElement(info, _DS + "KeyName").text = f"{key.key_type}-{key.status}-{key.id}"
        data = etree.SubElement(info, _DS + "X509Data")
        etree.SubElement(data, _DS + "X509Certificate").text = key.cert_b64
    for urn in NAMEID_FORMATS.values():
        etree.SubElement(idp, _MD + "NameIDFormat").text = urn
    for binding in (BINDING_REDIRECT, BINDING_POST):
        etree.SubElement(
            idp, _MD + "SingleSignOnService", Binding=binding, Location=sso_url(public_url)
        )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
