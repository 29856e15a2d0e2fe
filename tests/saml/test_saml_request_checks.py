"""The AuthnRequest checks that stand between a hostile request and an assertion.

Each check is tried at its own level (``authn_request.check``,
``sp_registry.resolve_acs``, ``xmldsig.verify_enveloped`` on hand-built inputs)
and against the real SSO endpoint of a running service:

* a signed request must name this endpoint as its Destination (else it can be
  replayed to another IdP that trusts the same SP);
* an identity broker's request must be signed, even on a row that does not say
  ``require_signed_requests`` (factor mode trusts the broker's subject);
* a Response goes only to an ACS registered with the HTTP-POST binding;
* the signature's one Reference must point at the request's root (no
  whole-document or wrapped references);
* only canonicalization and enveloped-signature transforms, refused before
  xmlsec runs anything (no XSLT, no XPath).
"""

from __future__ import annotations

import base64
import copy

import httpx
import pytest
import xmlsec
from lxml import etree
from sqlalchemy import create_engine, select, update

from idp_service.saml import registry as sp_registry
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_request, xmldsig
from idp_service.saml.tables import ServiceProvider
from tests.procs import start_service
from tests.saml_support import (
    IDP_PUBLIC,
    NS,
    authn_request_xml,
    cached_key_pair,
    redirect_query,
    sign_enveloped,
    sp_metadata,
    write_file,
)

POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
SSO = IDP_PUBLIC + "/saml/sso"
SP = "http://checks.test/metadata"
ACS = "http://checks.test/acs"
ARTIFACT_ACS = "http://checks.test/acs-artifact"
BROKER = "http://broker.checks.test/metadata"
BROKER_ACS = "http://broker.checks.test/acs"
XSLT = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"


def _sp(**overrides) -> ServiceProvider:
    """A service provider row as the registry would hold it (not stored)."""
    _, cert = cached_key_pair("checks-sp")
    values = {
        "id": "sp-1",
        "entity_id": SP,
        "name": "Checks",
        "enabled": True,
        "acs": [{"binding": POST, "location": ACS, "index": 0, "is_default": None}],
        "signing_certs": [cert],
        "encryption_certs": [],
        "nameid_format": "emailAddress",
        "attributes": {},
        "require_signed_requests": False,
        "sign_response": True,
        "sign_assertion": True,
        "signature_algorithm": "rsa-sha256",
        "encrypt_assertion": False,
        "allow_idp_initiated": False,
        "identity_broker": False,
        "session_minutes": 480,
    }
    values.update(overrides)
    return ServiceProvider(**values)


def _post(xml: bytes) -> authn_request.Incoming:
    return authn_request.read_post(base64.b64encode(xml).decode(), None)


def _check(xml: bytes, sp: ServiceProvider) -> authn_request.Accepted:
    incoming = _post(xml)
    return authn_request.check(incoming, authn_request.parse(incoming.xml), sp, sso_url=SSO)


def _signed(xml: bytes) -> bytes:
    key, cert = cached_key_pair("checks-sp")
    return sign_enveloped(xml, key, cert)


def _sign_with_reference(xml: bytes, uri: str) -> etree._Element:
    """Sign ``xml`` with the SP's key, the Reference's URI being ``uri``."""
    key, _ = cached_key_pair("checks-sp")
    root = etree.fromstring(xml)
    sig = xmlsec.template.create(
        root, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256, ns="ds"
    )
    root.insert(1, sig)
    ref = xmlsec.template.add_reference(sig, xmlsec.Transform.SHA256, uri=uri)
    xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
    xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
    ctx = xmlsec.SignatureContext()
    ctx.register_id(root, "ID")
    ctx.key = xmlsec.Key.from_memory(key.encode(), xmlsec.constants.KeyDataFormatPem)
    ctx.sign(sig)
    return root


def _wrapped(signed: bytes, *, evil_id: str, subject: str) -> etree._Element:
    """Signature wrapping: the SP's signed request hidden in Extensions under a forged root."""
    original = etree.fromstring(signed)
    sig = original.find(f"{{{NS['ds']}}}Signature")
    original.remove(sig)
    evil = etree.fromstring(
        authn_request_xml(issuer=SP, request_id=evil_id, subject=subject, destination=SSO)
    )
    evil.insert(1, sig)
    extensions = etree.SubElement(evil, f"{{{NS['samlp']}}}Extensions")
    extensions.append(original)
    return evil


def _with_transform(root: etree._Element, algorithm: str, body: str = "") -> etree._Element:
    """A copy of a signed request with one more Transform in its Reference."""
    root = copy.deepcopy(root)
    transforms = root.find(
        f"{{{NS['ds']}}}Signature/{{{NS['ds']}}}SignedInfo/{{{NS['ds']}}}Reference/"
        f"{{{NS['ds']}}}Transforms"
    )
    extra = etree.SubElement(transforms, f"{{{NS['ds']}}}Transform", Algorithm=algorithm)
    if body:
        extra.append(etree.fromstring(body))
    return root


STYLESHEET = (
    '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
    '<xsl:template match="/"><xsl:copy-of select="document(\'file:///etc/passwd\')"/>'
    "</xsl:template></xsl:stylesheet>"
)
XPATH_BODY = f'<ds:XPath xmlns:ds="{NS["ds"]}">not(ancestor-or-self::*)</ds:XPath>'


# ---- unit: each check on its own ----------------------------------------------------------


def test_a_signed_request_without_destination_is_refused():
    sp = _sp()
    assert _check(_signed(authn_request_xml(issuer=SP)), sp).signed  # the control
    with pytest.raises(SamlError) as refused:
        _check(_signed(authn_request_xml(issuer=SP, destination=None)), sp)
    assert refused.value.code == "saml_wrong_destination"
    # An unsigned request may leave it out: nothing in it is trusted.
    assert not _check(authn_request_xml(issuer=SP, destination=None), sp).signed


def test_a_broker_must_sign_even_when_its_row_does_not_require_it():
    broker = _sp(entity_id=BROKER, identity_broker=True, require_signed_requests=False)
    unsigned = authn_request_xml(issuer=BROKER, subject="alice@example.com")
    with pytest.raises(SamlError) as refused:
        _check(unsigned, broker)
    assert refused.value.code == "saml_signature_required" and refused.value.status == 403
    signed = _check(_signed(authn_request_xml(issuer=BROKER, subject="alice@example.com")), broker)
    assert signed.signed and signed.identity_broker


def test_the_acs_must_be_registered_with_the_post_binding():
    sp = _sp(
        acs=[
            {"binding": POST, "location": ACS, "index": 0, "is_default": True},
            {"binding": ARTIFACT, "location": ARTIFACT_ACS, "index": 1, "is_default": None},
        ]
    )
    assert sp_registry.resolve_acs(sp, url=ACS) == ACS
    assert sp_registry.resolve_acs(sp, url=ACS, binding=POST) == ACS
    for binding in (None, POST):
        with pytest.raises(SamlError) as refused:
            sp_registry.resolve_acs(sp, url=ARTIFACT_ACS, binding=binding)
        assert refused.value.code == "saml_acs_mismatch"
    with pytest.raises(SamlError) as refused:
        sp_registry.resolve_acs(sp, url=ACS, binding=ARTIFACT)
    assert refused.value.code == "saml_unsupported_binding"


def test_the_reference_must_point_at_the_root():
    _, cert = cached_key_pair("checks-sp")
    xml = authn_request_xml(issuer=SP, request_id="_root-1", destination=SSO)
    xmldsig.verify_enveloped(_sign_with_reference(xml, "#_root-1"), [cert])  # the control
    # URI="" covers the whole document: xmlsec verifies it, the check must not accept it.
    whole = _sign_with_reference(xml, "")
    with pytest.raises(SamlError) as refused:
        xmldsig.verify_enveloped(whole, [cert])
    assert refused.value.code == "saml_signature_invalid"
    wrapped = _wrapped(_signed(xml), evil_id="_evil-1", subject="mallory@example.com")
    with pytest.raises(SamlError) as refused:
        xmldsig.verify_enveloped(wrapped, [cert])
    assert refused.value.code == "saml_signature_invalid"


@pytest.mark.parametrize(("algorithm", "body"), [(XSLT, STYLESHEET), (XPATH, XPATH_BODY)])
def test_dangerous_transforms_are_refused_before_xmlsec_runs(monkeypatch, algorithm, body):
    _, cert = cached_key_pair("checks-sp")
    signed = etree.fromstring(_signed(authn_request_xml(issuer=SP, destination=SSO)))
    hostile = _with_transform(signed, algorithm, body)
    contexts: list[object] = []
    real = xmlsec.SignatureContext

    def spy(*args, **kwargs):
        contexts.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(xmlsec, "SignatureContext", spy)
    xmldsig.verify_enveloped(signed, [cert])  # the control reaches xmlsec
    assert len(contexts) == 1
    with pytest.raises(SamlError) as refused:
        xmldsig.verify_enveloped(hostile, [cert])
    assert refused.value.code == "saml_signature_invalid"
    assert "transform" in str(refused.value)
    assert len(contexts) == 1  # refused before a signature context was ever made


# ---- end to end: the real SSO endpoint ----------------------------------------------------


@pytest.fixture(scope="module")
def sso(tmp_path_factory):
    """A running service with a plain SP (POST and Artifact ACS) and a broker."""
    tmp = tmp_path_factory.mktemp("saml-checks")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    svc = start_service(tmp, url)
    _, cert = cached_key_pair("checks-sp")
    md = sp_metadata(SP, [ACS], cert_pem=cert).decode()
    md = md.replace(
        "</md:SPSSODescriptor>",
        f'<md:AssertionConsumerService Binding="{ARTIFACT}" Location="{ARTIFACT_ACS}" '
        'index="5"/></md:SPSSODescriptor>',
    )
    svc.cli("sp", "add", "--metadata", write_file(tmp, "sp.xml", md), "--name", "Checks")
    broker_md = sp_metadata(BROKER, [BROKER_ACS], cert_pem=cert).decode()
    svc.cli("sp", "add", "--metadata", write_file(tmp, "broker.xml", broker_md), "--name", "Broker")
    svc.cli("sp", "update", "Broker", "--identity-broker", "--nameid-format", "unspecified")
    # A broker row that does not say require_signed_requests (written before that rule,
    # or by hand): factor mode must still insist on a signature.
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(
            update(ServiceProvider)
            .where(ServiceProvider.entity_id == BROKER)
            .values(require_signed_requests=False)
        )
    engine.dispose()
    yield svc
    svc.stop()


def _send(svc, xml: bytes | etree._Element) -> httpx.Response:
    if isinstance(xml, etree._Element):
        xml = etree.tostring(xml)
    return httpx.post(
        svc.url + "/saml/sso",
        data={"SAMLRequest": base64.b64encode(xml).decode(), "RelayState": "rs"},
        follow_redirects=False,
    )


def _refused(r: httpx.Response, code: str) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert code in r.text
    assert "location" not in r.headers  # no sign-in was started


def _accepted(r: httpx.Response) -> None:
    assert r.status_code == 303 and r.headers["location"].startswith("/login/"), r.text[:300]


def test_e2e_signed_request_without_destination(sso):
    sso_url = sso.url + "/saml/sso"
    _accepted(_send(sso, _signed(authn_request_xml(issuer=SP, destination=sso_url))))
    _refused(
        _send(sso, _signed(authn_request_xml(issuer=SP, destination=None))),
        "saml_wrong_destination",
    )
    other = "http://other-idp.test/saml/sso"
    _refused(
        _send(sso, _signed(authn_request_xml(issuer=SP, destination=other))),
        "saml_wrong_destination",
    )


def test_e2e_unsigned_broker_request_naming_a_subject(sso):
    sso_url = sso.url + "/saml/sso"
    unsigned = authn_request_xml(issuer=BROKER, subject="alice@example.com", destination=sso_url)
    _refused(_send(sso, unsigned), "saml_signature_required")
    r = httpx.get(sso.url + "/saml/sso?" + redirect_query(unsigned), follow_redirects=False)
    _refused(r, "saml_signature_required")
    _accepted(_send(sso, _signed(unsigned)))


def test_e2e_acs_with_a_binding_the_sp_never_registered(sso):
    sso_url = sso.url + "/saml/sso"

    def request(acs: str, binding: str) -> bytes:
        extra = f' AssertionConsumerServiceURL="{acs}" ProtocolBinding="{binding}"'
        return authn_request_xml(issuer=SP, destination=sso_url, extra_attrs=extra)

    _accepted(_send(sso, request(ACS, POST)))
    _refused(_send(sso, request(ACS, ARTIFACT)), "saml_unsupported_binding")
    _refused(_send(sso, request(ARTIFACT_ACS, POST)), "saml_acs_mismatch")
    only_url = f' AssertionConsumerServiceURL="{ARTIFACT_ACS}"'
    _refused(
        _send(sso, authn_request_xml(issuer=SP, destination=sso_url, extra_attrs=only_url)),
        "saml_acs_mismatch",
    )


def test_e2e_a_stored_acs_with_another_binding_is_never_answered(sso):
    """The metadata parser keeps only HTTP-POST endpoints, so this needs a row that holds
    another binding (written before that rule, or by hand): resolve_acs must still refuse
    to send a Response there, whatever binding the request asks for."""
    sso_url = sso.url + "/saml/sso"
    engine = create_engine(sso.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.begin() as c:
            stored = c.execute(
                select(ServiceProvider.acs).where(ServiceProvider.entity_id == SP)
            ).scalar_one()
            artifact = {
                "binding": ARTIFACT,
                "location": ARTIFACT_ACS,
                "index": 6,
                "is_default": None,
            }
            assert all(ep["binding"] == POST for ep in stored)  # what the parser stored
            c.execute(
                update(ServiceProvider)
                .where(ServiceProvider.entity_id == SP)
                .values(acs=[*stored, artifact])
            )
        for extra in (
            f' AssertionConsumerServiceURL="{ARTIFACT_ACS}"',
            f' AssertionConsumerServiceURL="{ARTIFACT_ACS}" ProtocolBinding="{POST}"',
            ' AssertionConsumerServiceIndex="6"',
        ):
            xml = authn_request_xml(issuer=SP, destination=sso_url, extra_attrs=extra)
            _refused(_send(sso, xml), "saml_acs_mismatch")
        ok = f' AssertionConsumerServiceURL="{ACS}"'
        _accepted(_send(sso, authn_request_xml(issuer=SP, destination=sso_url, extra_attrs=ok)))
    finally:
        with engine.begin() as c:
            c.execute(
                update(ServiceProvider).where(ServiceProvider.entity_id == SP).values(acs=stored)
            )
        engine.dispose()


def test_e2e_reference_not_at_the_root_and_signature_wrapping(sso):
    sso_url = sso.url + "/saml/sso"
    xml = authn_request_xml(issuer=SP, request_id="_e2e-root", destination=sso_url)
    _accepted(_send(sso, _sign_with_reference(xml, "#_e2e-root")))
    _refused(_send(sso, _sign_with_reference(xml, "")), "saml_signature_invalid")
    wrapped = _wrapped(_signed(xml), evil_id="_e2e-evil", subject="mallory@example.com")
    wrapped.set("Destination", sso_url)
    _refused(_send(sso, wrapped), "saml_signature_invalid")


@pytest.mark.parametrize(("algorithm", "body"), [(XSLT, STYLESHEET), (XPATH, XPATH_BODY)])
def test_e2e_dangerous_transforms(sso, algorithm, body):
    sso_url = sso.url + "/saml/sso"
    signed = etree.fromstring(_signed(authn_request_xml(issuer=SP, destination=sso_url)))
    _refused(_send(sso, _with_transform(signed, algorithm, body)), "saml_signature_invalid")
