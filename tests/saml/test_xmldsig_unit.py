"""XML signatures and encryption on their own: what ``sign`` writes, every refusal of
``verify_enveloped`` and ``verify_detached`` with its code, and an ``EncryptedAssertion``
decrypted again with the SP's key.

Written for the mutation run over ``idp_service/saml/protocol/xmldsig.py``. The signed
inputs are built here with xmlsec directly (not with ``xmldsig.sign``), so each part of a
signature (method, digest, transforms, Reference) can be chosen, and a signature made by
``sign`` is checked with xmlsec directly, not only with ``verify_enveloped``.
"""

from __future__ import annotations

import base64
import copy

import pytest
import xmlsec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from lxml import etree

from idp_service.saml import keys
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import xmldsig
from tests.saml_support import NS, authn_request_xml, cached_key_pair

DS = f"{{{NS['ds']}}}"
XENC = "http://www.w3.org/2001/04/xmlenc#"
SSO = "http://127.0.0.1:8000/saml/sso"
T = xmlsec.constants

_LOADED: dict[str, tuple[keys.LoadedKey, bytes]] = {}


def _idp_key(key_type: str) -> tuple[keys.LoadedKey, bytes]:
    """An IdP signing key as the key ring loads it, and its private key PEM."""
    if key_type not in _LOADED:
        pem, cert_pem, _ = keys._generate(key_type, f"unit {key_type}")
        _LOADED[key_type] = (keys.load("k-" + key_type, key_type, "active", pem, cert_pem), pem)
    return _LOADED[key_type]


def _sp(name: str = "dsig-sp") -> tuple[str, str]:
    return cached_key_pair(name)


def _request(request_id: str = "_req-1") -> etree._Element:
    return etree.fromstring(authn_request_xml(issuer="http://sp.test/md", request_id=request_id))


def _signed(
    root: etree._Element | None = None,
    *,
    key_pem: str | bytes | None = None,
    method=T.TransformRsaSha256,
    digest=T.TransformSha256,
    transforms=(T.TransformEnveloped, T.TransformExclC14N),
    c14n=T.TransformExclC14N,
    uri: str | None = None,
) -> etree._Element:
    """``root`` (a fresh request by default) with an enveloped signature made by xmlsec."""
    root = _request() if root is None else root
    key_pem = key_pem or _sp()[0]
    sig = xmlsec.template.create(root, c14n, method, ns="ds")
    root.insert(1, sig)
    ref = xmlsec.template.add_reference(
        sig, digest, uri=("#" + root.get("ID", "")) if uri is None else uri
    )
    for transform in transforms:
        xmlsec.template.add_transform(ref, transform)
    ctx = xmlsec.SignatureContext()
    for node in root.iter():
        if node.get("ID") is not None:
            ctx.register_id(node, "ID")
    ctx.key = xmlsec.Key.from_memory(
        key_pem if isinstance(key_pem, bytes) else key_pem.encode(), T.KeyDataFormatPem
    )
    ctx.sign(sig)
    return _reparsed(root)


def _reparsed(root: etree._Element) -> etree._Element:
    """``root`` as a receiver reads it: lxml's find() does not see every node xmlsec
    creates in place (their names are not in the document's dictionary)."""
    return etree.fromstring(etree.tostring(root))


def _refused(root: etree._Element, certs: list[str], code: str = "saml_signature_invalid"):
    with pytest.raises(SamlError) as refused:
        xmldsig.verify_enveloped(root, certs)
    assert refused.value.code == code, refused.value
    assert refused.value.status == 400
    return refused.value


# ---- sign ---------------------------------------------------------------------------------


@pytest.fixture
def fresh_templates(monkeypatch):
    """Each test below builds the Signature templates anew: they are cached per thread, so
    a template made by an earlier test would hide how this one is built."""
    monkeypatch.delattr(xmldsig._local, "templates", raising=False)


@pytest.mark.parametrize(
    ("key_type", "method"),
    [("rsa", T.TransformRsaSha256.href), ("ec", T.TransformEcdsaSha256.href)],
)
def test_sign_writes_an_enveloped_signature_after_the_issuer(fresh_templates, key_type, method):
    key, _ = _idp_key(key_type)
    root = etree.fromstring(
        authn_request_xml(
            issuer="http://sp.test/md",
            request_id="_signed-1",
            subject="alice@example.com",
            nameid_format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        )
    )
    xmldsig.sign(root, key)
    assert [child.tag for child in root] == [
        f"{{{NS['saml']}}}Issuer",
        DS + "Signature",
        f"{{{NS['saml']}}}Subject",
        f"{{{NS['samlp']}}}NameIDPolicy",
    ]
    sig = root[1]
    assert sig.prefix == "ds"
    info = sig.find(DS + "SignedInfo")
    assert info.find(DS + "CanonicalizationMethod").get("Algorithm") == T.TransformExclC14N.href
    assert info.find(DS + "SignatureMethod").get("Algorithm") == method
    ref = info.find(DS + "Reference")
    assert ref.get("URI") == "#_signed-1"
    assert ref.find(DS + "DigestMethod").get("Algorithm") == T.TransformSha256.href
    assert [t.get("Algorithm") for t in ref.iterfind(f"{DS}Transforms/{DS}Transform")] == [
        T.TransformEnveloped.href,
        T.TransformExclC14N.href,
    ]
    cert = sig.find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert cert.text == key.cert_b64
    # xmlsec itself (not our verifier) accepts it with the certificate alone.
    ctx = xmlsec.SignatureContext()
    ctx.register_id(root, "ID")
    ctx.key = xmlsec.Key.from_memory(key.cert_pem.encode(), T.KeyDataFormatCertPem)
    ctx.verify(sig)
    xmldsig.verify_enveloped(root, [key.cert_pem])
    # Any change to the signed element breaks it.
    root.set("Destination", "http://elsewhere.test/")
    with pytest.raises(xmlsec.Error):
        ctx.verify(sig)


def test_sign_without_an_issuer_puts_the_signature_first(fresh_templates):
    key, _ = _idp_key("rsa")
    root = etree.fromstring(
        f'<samlp:Response xmlns:samlp="{NS["samlp"]}" ID="_resp-1"><samlp:Status/></samlp:Response>'
    )
    xmldsig.sign(root, key)
    assert root[0].tag == DS + "Signature" and root[1].tag == f"{{{NS['samlp']}}}Status"
    xmldsig.verify_enveloped(root, [key.cert_pem])


def test_sign_refuses_an_element_without_an_id(fresh_templates):
    key, _ = _idp_key("rsa")
    root = etree.fromstring(f'<samlp:Response xmlns:samlp="{NS["samlp"]}"/>')
    with pytest.raises(ValueError, match="has no ID to sign"):
        xmldsig.sign(root, key)
    assert len(root) == 0


def test_signing_twice_leaves_the_template_untouched(fresh_templates):
    key, _ = _idp_key("rsa")
    first, second = _request("_one"), _request("_two")
    xmldsig.sign(first, key)
    xmldsig.sign(second, key)
    assert first[1] is not second[1]
    assert second[1].find(f"{DS}SignedInfo/{DS}Reference").get("URI") == "#_two"
    xmldsig.verify_enveloped(first, [key.cert_pem])
    xmldsig.verify_enveloped(second, [key.cert_pem])
    template = _reparsed(xmldsig._template("rsa"))
    assert template.find(f"{DS}SignedInfo/{DS}Reference").get("URI") == "#X"
    assert not template.find(f"{DS}SignatureValue").text
    assert not template.find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate").text
    assert xmldsig._template("rsa") is xmldsig._template("rsa")  # cached per key type
    assert xmldsig._template("ec") is not xmldsig._template("rsa")


# ---- certificates ---------------------------------------------------------------------------


def test_an_unusable_certificate_is_a_signature_refusal():
    with pytest.raises(SamlError) as refused:
        xmldsig.cert_key(
            "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
        )
    assert refused.value.code == "saml_signature_invalid"
    assert str(refused.value).startswith("saml_signature_invalid: unusable SP certificate: ")
    _, cert = _sp()
    assert xmldsig.cert_key(cert) is xmldsig.cert_key(cert)  # cached
    root = _signed()
    _refused(root, ["not a certificate"])


# ---- signature_of ---------------------------------------------------------------------------


def test_signature_of_finds_only_the_roots_own_signature():
    assert xmldsig.signature_of(_request()) is None
    root = _signed()
    assert xmldsig.signature_of(root) is root[1]
    # A signature inside a child is not the request's.
    holder = _request()
    etree.SubElement(holder, f"{{{NS['samlp']}}}Extensions").append(copy.deepcopy(root[1]))
    assert xmldsig.signature_of(holder) is None


def test_two_signatures_are_refused():
    root = _signed()
    root.insert(2, copy.deepcopy(root[1]))
    with pytest.raises(SamlError) as refused:
        xmldsig.signature_of(root)
    assert refused.value.code == "saml_signature_invalid"
    _refused(root, [_sp()[1]])


# ---- verify_enveloped -----------------------------------------------------------------------


def test_an_unsigned_request_is_refused_as_unsigned():
    refused = _refused(_request(), [_sp()[1]], "saml_signature_required")
    assert "not signed" in str(refused)


def test_the_control_verifies():
    xmldsig.verify_enveloped(_signed(), [_sp()[1]])


@pytest.mark.parametrize("uri", ["", "#_other", "#_req-1 ", "_req-1", "#"])
def test_the_reference_must_name_the_root(uri):
    root = _request()
    if uri == "#_other":
        etree.SubElement(root, f"{{{NS['samlp']}}}Extensions", ID="_other")
    if uri in ("#_req-1 ", "_req-1", "#"):
        # xmlsec cannot sign these; sign the right one and rewrite the URI.
        root = _signed(root)
        root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference").set("URI", uri)
    else:
        root = _signed(root, uri=uri)
    _refused(root, [_sp()[1]])


def test_a_root_without_an_id_is_refused():
    root = _signed()
    del root.attrib["ID"]
    _refused(root, [_sp()[1]])
    root.set("ID", "")
    root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference").set("URI", "#")
    _refused(root, [_sp()[1]])


def test_exactly_one_reference():
    root = _signed()
    info = root.find(f"{DS}Signature/{DS}SignedInfo")
    info.append(copy.deepcopy(info.find(DS + "Reference")))
    _refused(root, [_sp()[1]])
    root = _signed()
    info = root.find(f"{DS}Signature/{DS}SignedInfo")
    info.remove(info.find(DS + "Reference"))
    _refused(root, [_sp()[1]])


@pytest.mark.parametrize(
    ("transforms", "c14n"),
    [
        ((T.TransformEnveloped, T.TransformExclC14N), T.TransformExclC14N),
        ((T.TransformEnveloped, T.TransformInclC14N), T.TransformInclC14N),
        ((T.TransformEnveloped, T.TransformExclC14NWithComments), T.TransformExclC14N),
        ((T.TransformEnveloped,), T.TransformExclC14N),
    ],
)
def test_the_allowed_transforms_verify(transforms, c14n):
    xmldsig.verify_enveloped(_signed(transforms=transforms, c14n=c14n), [_sp()[1]])


@pytest.mark.parametrize(
    "transform",
    [T.TransformXPath, T.TransformXslt, T.TransformXPath2, T.TransformInclC14NWithComments],
)
def test_other_transforms_are_refused(transform):
    root = _signed()
    transforms = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}Transforms")
    etree.SubElement(transforms, DS + "Transform", Algorithm=transform.href)
    refused = _refused(root, [_sp()[1]])
    assert "transform not allowed" in str(refused)


def test_a_transform_without_an_algorithm_is_refused():
    root = _signed()
    transforms = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}Transforms")
    etree.SubElement(transforms, DS + "Transform")
    assert "transform not allowed" in str(_refused(root, [_sp()[1]]))


@pytest.mark.parametrize(
    ("key", "method"),
    [
        ("rsa", T.TransformRsaSha256),
        ("rsa", T.TransformRsaSha384),
        ("rsa", T.TransformRsaSha512),
        ("ec", T.TransformEcdsaSha256),
        ("ec", T.TransformEcdsaSha384),
        ("ec", T.TransformEcdsaSha512),
    ],
)
def test_the_allowed_signature_algorithms_verify(key, method):
    loaded, pem = _idp_key(key)
    xmldsig.verify_enveloped(_signed(key_pem=pem, method=method), [loaded.cert_pem])


@pytest.mark.parametrize(
    "method", [T.TransformRsaSha1, T.TransformRsaSha224, T.TransformHmacSha256]
)
def test_other_signature_algorithms_are_refused(method):
    if method is T.TransformHmacSha256:
        root = _signed()
        root.find(f"{DS}Signature/{DS}SignedInfo/{DS}SignatureMethod").set("Algorithm", method.href)
    else:
        root = _signed(method=method)
    assert "algorithm not allowed" in str(_refused(root, [_sp()[1]]))


def test_a_signature_without_a_method_is_refused():
    root = _signed()
    info = root.find(f"{DS}Signature/{DS}SignedInfo")
    info.remove(info.find(DS + "SignatureMethod"))
    assert "algorithm not allowed" in str(_refused(root, [_sp()[1]]))


@pytest.mark.parametrize("digest", [T.TransformSha256, T.TransformSha384, T.TransformSha512])
def test_the_allowed_digests_verify(digest):
    xmldsig.verify_enveloped(_signed(digest=digest), [_sp()[1]])


@pytest.mark.parametrize("digest", [T.TransformSha1, T.TransformSha224, T.TransformMd5])
def test_other_digests_are_refused_by_xmlsec(digest):
    """The Reference's DigestMethod is not on the first allow-list (transforms, method):
    xmlsec refuses it because only _REFERENCE_TRANSFORMS are enabled for references."""
    root = _signed(digest=digest)
    ctx = xmlsec.SignatureContext()  # the control: xmlsec with every transform enabled
    ctx.register_id(root, "ID")
    ctx.key = xmlsec.Key.from_memory(_sp()[1].encode(), T.KeyDataFormatCertPem)
    ctx.verify(root.find(DS + "Signature"))
    assert "does not verify" in str(_refused(root, [_sp()[1]]))


def test_there_must_be_a_certificate():
    root = _signed()
    assert "no signing certificate" in str(_refused(root, []))


def test_any_of_the_sps_certificates_verifies():
    _, cert = _sp()
    _, other = _sp("dsig-other")
    root = _signed()
    xmldsig.verify_enveloped(root, [other, cert])
    xmldsig.verify_enveloped(root, [cert, other])
    assert "does not verify" in str(_refused(root, [other]))
    assert "does not verify" in str(_refused(root, [other, other]))


def test_a_changed_request_does_not_verify():
    root = _signed()
    root.set("AssertionConsumerServiceURL", "http://evil.test/acs")
    assert "does not verify" in str(_refused(root, [_sp()[1]]))
    root = _signed()
    root.find(f"{{{NS['saml']}}}Issuer").text = "http://other.test/md"
    _refused(root, [_sp()[1]])


# ---- verify_detached ------------------------------------------------------------------------


def _detached(
    data: bytes, method=T.TransformRsaSha256, key_pem: str | bytes | None = None
) -> bytes:
    key_pem = key_pem or _sp()[0]
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(
        key_pem if isinstance(key_pem, bytes) else key_pem.encode(), T.KeyDataFormatPem
    )
    return ctx.sign_binary(data, method)


QUERY = b"SAMLRequest=abc&RelayState=r&SigAlg=x"


@pytest.mark.parametrize(
    ("key", "method"),
    [
        ("rsa", T.TransformRsaSha256),
        ("rsa", T.TransformRsaSha384),
        ("rsa", T.TransformRsaSha512),
        ("ec", T.TransformEcdsaSha256),
        ("ec", T.TransformEcdsaSha384),
        ("ec", T.TransformEcdsaSha512),
    ],
)
def test_detached_signatures_verify_with_each_allowed_algorithm(key, method):
    loaded, pem = _idp_key(key)
    xmldsig.verify_detached(QUERY, method.href, _detached(QUERY, method, pem), [loaded.cert_pem])


def _detached_refused(signed, alg, signature, certs) -> str:
    with pytest.raises(SamlError) as refused:
        xmldsig.verify_detached(signed, alg, signature, certs)
    assert refused.value.code == "saml_signature_invalid" and refused.value.status == 400
    return str(refused.value)


def test_detached_refusals():
    _, cert = _sp()
    _, other = _sp("dsig-other")
    good = _detached(QUERY)
    alg = T.TransformRsaSha256.href
    xmldsig.verify_detached(QUERY, alg, good, [other, cert])
    assert "algorithm not allowed" in _detached_refused(
        QUERY, T.TransformRsaSha1.href, _detached(QUERY, T.TransformRsaSha1), [cert]
    )
    assert "algorithm not allowed" in _detached_refused(QUERY, "", good, [cert])
    assert "no signing certificate" in _detached_refused(QUERY, alg, good, [])
    assert "does not verify" in _detached_refused(QUERY, alg, good, [other])
    assert "does not verify" in _detached_refused(QUERY + b"x", alg, good, [cert])
    assert "does not verify" in _detached_refused(QUERY, T.TransformRsaSha512.href, good, [cert])
    assert "unusable SP certificate" in _detached_refused(QUERY, alg, good, ["junk"])


# ---- encrypt_assertion ----------------------------------------------------------------------


@pytest.fixture
def saml_prefix_unregistered():
    """Another library (python3-saml's xml_utils, imported by other tests) may register the
    ``saml`` prefix process-wide, and lxml then writes it for an element made without a
    namespace map; the service does not import it, so the wrapper must declare the prefix
    itself. A registration is replaced, never removed: put back python3-saml's afterwards."""
    etree.register_namespace("dtunit", NS["saml"])
    yield
    etree.register_namespace("saml", NS["saml"])


def test_an_encrypted_assertion_decrypts_with_the_sps_key(saml_prefix_unregistered):
    key_pem, cert = _sp("dsig-enc")
    assertion = etree.fromstring(
        f'<saml:Assertion xmlns:saml="{NS["saml"]}" ID="_a1"><saml:Issuer>idp</saml:Issuer>'
        "<saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject>"
        "</saml:Assertion>"
    )
    plain = etree.tostring(assertion)
    wrapper = _reparsed(xmldsig.encrypt_assertion(assertion, cert))
    assert wrapper.tag == f"{{{NS['saml']}}}EncryptedAssertion"
    assert wrapper.nsmap == {"saml": NS["saml"]}
    assert plain not in etree.tostring(wrapper) and b"alice" not in etree.tostring(wrapper)
    enc_data = wrapper.find(f"{{{XENC}}}EncryptedData")
    assert len(wrapper) == 1 and enc_data.prefix == "xenc"
    assert enc_data.get("Type") == T.TypeEncElement
    assert enc_data.find(f"{{{XENC}}}EncryptionMethod").get("Algorithm") == (
        T.TransformAes256Gcm.href
    )
    key_info = enc_data.find(DS + "KeyInfo")
    assert key_info is not None and key_info.prefix == "ds"
    enc_key = key_info.find(f"{{{XENC}}}EncryptedKey")
    assert enc_key.find(f"{{{XENC}}}EncryptionMethod").get("Algorithm") == T.TransformRsaOaep.href
    cipher = enc_key.find(f"{{{XENC}}}CipherData/{{{XENC}}}CipherValue").text
    assert len(base64.b64decode(cipher)) == 256  # one RSA-2048 block: the wrapped key
    body = enc_data.find(f"{{{XENC}}}CipherData/{{{XENC}}}CipherValue").text
    assert len(base64.b64decode(body)) == 12 + len(plain) + 16  # GCM: nonce, text, tag

    # Opened by hand, as a strict SP would: the wrapped key is exactly 256 bits.
    private = serialization.load_pem_private_key(key_pem.encode(), password=None)
    session_key = private.decrypt(
        base64.b64decode(cipher),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    assert len(session_key) == 32
    raw = base64.b64decode(body)
    assert AESGCM(session_key).decrypt(raw[:12], raw[12:], None) == plain

    manager = xmlsec.KeysManager()
    manager.add_key(xmlsec.Key.from_memory(key_pem.encode(), T.KeyDataFormatPem))
    decrypted = xmlsec.EncryptionContext(manager).decrypt(copy.deepcopy(enc_data))
    assert etree.tostring(decrypted) == plain
    # Someone else's key cannot open it.
    other_pem, _ = _sp("dsig-other")
    manager = xmlsec.KeysManager()
    manager.add_key(xmlsec.Key.from_memory(other_pem.encode(), T.KeyDataFormatPem))
    with pytest.raises(xmlsec.Error):
        xmlsec.EncryptionContext(manager).decrypt(copy.deepcopy(enc_data))


def test_each_encryption_uses_a_fresh_key():
    _, cert = _sp("dsig-enc")
    assertion = etree.fromstring(f'<saml:Assertion xmlns:saml="{NS["saml"]}" ID="_a2"/>')
    one = _reparsed(xmldsig.encrypt_assertion(assertion, cert))
    two = _reparsed(xmldsig.encrypt_assertion(assertion, cert))
    path = f"{{{XENC}}}EncryptedData/{{{XENC}}}CipherData/{{{XENC}}}CipherValue"
    assert one.find(path).text != two.find(path).text


def test_encrypting_for_an_unusable_certificate_is_refused():
    assertion = etree.fromstring(f'<saml:Assertion xmlns:saml="{NS["saml"]}" ID="_a3"/>')
    with pytest.raises(SamlError) as refused:
        xmldsig.encrypt_assertion(assertion, "junk")
    assert refused.value.code == "saml_signature_invalid"
