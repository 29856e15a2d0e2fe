"""XML signatures and encryption for SAML messages, through python-xmlsec.

* :func:`sign` adds an enveloped, exclusive-c14n, SHA-256 signature to an
  element that has an ``ID`` (RSA-SHA256 or ECDSA-SHA256), right after its
  ``Issuer`` as the SAML schema requires.
* :func:`verify_enveloped` checks a signed AuthnRequest (POST binding): exactly
  one signature, referencing the document element itself, with only the
  transforms SAML allows, by one of the SP's certificates.
* :func:`verify_detached` checks a Redirect-binding signature over the query string.
* :func:`encrypt_assertion` wraps an Assertion in ``EncryptedAssertion``
  (AES-256-GCM content, RSA-OAEP key transport to the SP's certificate).
"""

from __future__ import annotations

import copy
import threading
from functools import lru_cache

import xmlsec
from lxml import etree

from idp_service.saml.errors import SamlError
from idp_service.saml.keys import LoadedKey
from idp_service.saml.protocol.constants import NS_DS, NS_SAML

_ISSUER = f"{{{NS_SAML}}}Issuer"
_SIGNATURE = f"{{{NS_DS}}}Signature"

SIGN_TRANSFORMS = {
    "rsa": xmlsec.constants.TransformRsaSha256,
    "ec": xmlsec.constants.TransformEcdsaSha256,
}
# Algorithms accepted on incoming (AuthnRequest) signatures: no SHA-1.
VERIFY_TRANSFORMS = {
    xmlsec.constants.TransformRsaSha256.href: xmlsec.constants.TransformRsaSha256,
    xmlsec.constants.TransformRsaSha384.href: xmlsec.constants.TransformRsaSha384,
    xmlsec.constants.TransformRsaSha512.href: xmlsec.constants.TransformRsaSha512,
    xmlsec.constants.TransformEcdsaSha256.href: xmlsec.constants.TransformEcdsaSha256,
    xmlsec.constants.TransformEcdsaSha384.href: xmlsec.constants.TransformEcdsaSha384,
    xmlsec.constants.TransformEcdsaSha512.href: xmlsec.constants.TransformEcdsaSha512,
}
_REFERENCE_TRANSFORMS = (
    xmlsec.constants.TransformEnveloped,
    xmlsec.constants.TransformExclC14N,
    xmlsec.constants.TransformExclC14NWithComments,
    xmlsec.constants.TransformInclC14N,
    xmlsec.constants.TransformSha256,
    xmlsec.constants.TransformSha384,
    xmlsec.constants.TransformSha512,
)
_ALLOWED_TRANSFORM_HREFS = {
    t.href
    for t in (
        xmlsec.constants.TransformEnveloped,
        xmlsec.constants.TransformExclC14N,
        xmlsec.constants.TransformInclC14N,
    )
} | {xmlsec.constants.TransformExclC14NWithComments.href}

_local = threading.local()


def _template(key_type: str) -> etree._Element:
    """A parsed Signature template per key type, copied for each signature (cheaper than
    building it node by node)."""
    cache = getattr(_local, "templates", None)
    if cache is None:
        cache = _local.templates = {}
    tpl = cache.get(key_type)
    if tpl is None:
        holder = etree.Element("holder")
        sig = xmlsec.template.create(
            holder, xmlsec.constants.TransformExclC14N, SIGN_TRANSFORMS[key_type], ns="ds"
        )
        ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri="#X")
        xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
        key_info = xmlsec.template.ensure_key_info(sig)
        x509_data = xmlsec.template.add_x509_data(key_info)
        xmlsec.template.x509_data_add_certificate(x509_data)
        tpl = cache[key_type] = sig
    return tpl


def sign(node: etree._Element, key: LoadedKey) -> None:
    """Sign ``node`` (which has an ``ID``) in place with ``key``."""
    sig = copy.deepcopy(_template(key.key_type))
    ref = sig.find(f"{{{NS_DS}}}SignedInfo/{{{NS_DS}}}Reference")
    cert = sig.find(f"{{{NS_DS}}}KeyInfo/{{{NS_DS}}}X509Data/{{{NS_DS}}}X509Certificate")
    assert ref is not None and cert is not None  # both are in every template
    node_id = node.get("ID")
    if node_id is None:
        raise ValueError(f"{node.tag} has no ID to sign")
    ref.set("URI", "#" + node_id)
    cert.text = key.cert_b64
    issuer = node.find(_ISSUER)
    node.insert(node.index(issuer) + 1 if issuer is not None else 0, sig)
    ctx = xmlsec.SignatureContext()
    ctx.register_id(node, "ID")
    ctx.key = key.xmlsec_key
    ctx.sign(sig)


def _load_cert_key(cert_pem: str) -> xmlsec.Key:
    return xmlsec.Key.from_memory(cert_pem.encode(), xmlsec.constants.KeyDataFormatCertPem)


# Cached by assignment rather than with a decorator: mutmut does not mutate decorated
# functions (docs/testing.md, "Mutation testing").
_cert_key = lru_cache(maxsize=256)(_load_cert_key)


def cert_key(cert_pem: str) -> xmlsec.Key:
    """An xmlsec verification key from an SP certificate (cached per process)."""
    try:
        return _cert_key(cert_pem)
    except xmlsec.Error as exc:
        raise SamlError("saml_signature_invalid", f"unusable SP certificate: {exc}") from None


def signature_of(root: etree._Element) -> etree._Element | None:
    """The enveloped signature of ``root``, or None; more than one is refused."""
    sigs = root.findall(_SIGNATURE)
    if len(sigs) > 1:
        raise SamlError("saml_signature_invalid", "more than one signature")
    # A signature anywhere else is not one we verify, and never one we trust.
    return sigs[0] if sigs else None


def verify_enveloped(root: etree._Element, certs: list[str]) -> None:
    """Verify ``root``'s enveloped signature with one of ``certs`` or raise ``SamlError``."""
    sig = signature_of(root)
    if sig is None:
        raise SamlError("saml_signature_required", "the request is not signed")
    root_id = root.get("ID")
    refs = sig.findall(f"{{{NS_DS}}}SignedInfo/{{{NS_DS}}}Reference")
    if len(refs) != 1 or not root_id or refs[0].get("URI") != "#" + root_id:
        raise SamlError("saml_signature_invalid", "the signature must reference the request")
    for transform in refs[0].iterfind(f"{{{NS_DS}}}Transforms/{{{NS_DS}}}Transform"):
        if transform.get("Algorithm") not in _ALLOWED_TRANSFORM_HREFS:
            raise SamlError("saml_signature_invalid", "signature transform not allowed")
    method = sig.find(f"{{{NS_DS}}}SignedInfo/{{{NS_DS}}}SignatureMethod")
    if method is None or method.get("Algorithm") not in VERIFY_TRANSFORMS:
        raise SamlError("saml_signature_invalid", "signature algorithm not allowed")
    if not certs:
        raise SamlError("saml_signature_invalid", "the SP has no signing certificate")
    for cert in certs:
        ctx = xmlsec.SignatureContext()
        ctx.register_id(root, "ID")
        for reference_transform in _REFERENCE_TRANSFORMS:
            ctx.enable_reference_transform(reference_transform)
        ctx.key = cert_key(cert)
        try:
            ctx.verify(sig)
            return
        except xmlsec.Error:
            continue
    raise SamlError("saml_signature_invalid", "the signature does not verify")


def verify_detached(signed: bytes, sig_alg: str, signature: bytes, certs: list[str]) -> None:
    """Verify a Redirect-binding signature over ``signed`` or raise ``SamlError``."""
    transform = VERIFY_TRANSFORMS.get(sig_alg)
    if transform is None:
        raise SamlError("saml_signature_invalid", "signature algorithm not allowed")
    if not certs:
        raise SamlError("saml_signature_invalid", "the SP has no signing certificate")
    for cert in certs:
        ctx = xmlsec.SignatureContext()
        ctx.key = cert_key(cert)
        try:
            ctx.verify_binary(signed, transform, signature)
            return
        except xmlsec.Error:
            continue
    raise SamlError("saml_signature_invalid", "the signature does not verify")


def encrypt_assertion(assertion: etree._Element, cert_pem: str) -> etree._Element:
    """An ``EncryptedAssertion`` holding ``assertion`` for ``cert_pem``'s owner.

    The assertion is serialized on its own first, so the ciphertext carries every
    namespace declaration it needs wherever the SP decrypts it.
    """
    wrapper = etree.Element(f"{{{NS_SAML}}}EncryptedAssertion", nsmap={"saml": NS_SAML})
    enc_data = xmlsec.template.encrypted_data_create(
        wrapper,
        xmlsec.constants.TransformAes256Gcm,
        type=xmlsec.constants.TypeEncElement,
        ns="xenc",
    )
    xmlsec.template.encrypted_data_ensure_cipher_value(enc_data)
    key_info = xmlsec.template.encrypted_data_ensure_key_info(enc_data, ns="ds")
    enc_key = xmlsec.template.add_encrypted_key(key_info, xmlsec.constants.TransformRsaOaep)
    xmlsec.template.encrypted_data_ensure_cipher_value(enc_key)
    manager = xmlsec.KeysManager()
    manager.add_key(cert_key(cert_pem))
    ctx = xmlsec.EncryptionContext(manager)
    ctx.key = xmlsec.Key.generate(
        xmlsec.constants.KeyDataAes, 256, xmlsec.constants.KeyDataTypeSession
    )
    wrapper.append(ctx.encrypt_binary(enc_data, etree.tostring(assertion)))
    return wrapper
