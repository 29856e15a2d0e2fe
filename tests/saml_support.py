"""Helpers for SAML tests: a simulated device, python3-saml and pysaml2 SPs, and the
stricter-than-the-peers checks our own tests apply to every Response."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
import uuid
import zlib
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import urlencode

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from nacl.signing import VerifyKey

from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response
from trust_protocol.encoding import b64d

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
}
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
NAMEID_URNS = {
    "emailAddress": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "persistent": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "transient": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "unspecified": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
}
IDP_PUBLIC = "http://127.0.0.1:8000"


def key_pair(cn: str = "test SP") -> tuple[str, str]:
    """(private key PEM, certificate PEM) for an SP."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


_KEYS: dict[str, tuple[str, str]] = {}


def cached_key_pair(name: str) -> tuple[str, str]:
    """One key pair per name per test session (RSA generation is slow)."""
    if name not in _KEYS:
        _KEYS[name] = key_pair(name)
    return _KEYS[name]


# ---- the device -------------------------------------------------------------------------


@dataclass
class SimDevice:
    """Plays the agent over a Flask test client or httpx client: registers, answers challenges."""

    keys: DeviceKeys = field(default_factory=lambda: DeviceKeys.generate(str(uuid.uuid4())))
    verify_key: VerifyKey | None = None
    hostname: str = "test-host"

    @property
    def id(self) -> str:
        return self.keys.device_id

    def register(self, client, code: str) -> dict:
        info = _json(client.get("/agent/v1/server"))
        self.verify_key = VerifyKey(b64d(info["server_key"], length=32))
        token = _json(client.post("/agent/v1/challenges", json={"purpose": "register"}))[
            "challenge"
        ]
        challenge = parse_challenge(token, self.verify_key)
        body = ResponseBody(
            token,
            self.keys.public_json(),
            {
                "hardware_uuid": f"hw-{self.id}",
                "serial": f"SN-{self.id[:8]}",
                "os": "linux",
                "hostname": self.hostname,
            },
            "test",
            time.time(),
            data={"enrollment_code": code},
        )
        resp = client.post("/agent/v1/register", content=seal_response(body, challenge, self.keys))
        assert resp.status_code == 201, resp.text
        return _json(resp)

    def answer(self, token: str) -> bytes:
        challenge = parse_challenge(token, self.verify_key)
        body = ResponseBody(token, self.keys.public_json(), {"os": "linux"}, "test", time.time())
        return seal_response(body, challenge, self.keys)


def _json(resp):
    return resp.json() if callable(getattr(resp, "json", None)) else resp.json


class FlaskClient:
    """A Flask test client with the httpx-like surface the helpers use."""

    def __init__(self, app) -> None:
        self.c = app.test_client()

    def get(self, path: str, **kw):
        return _Resp(self.c.get(path, **kw))

    def post(self, path: str, *, json=None, content=None, data=None, **kw):
        if json is not None:
            return _Resp(self.c.post(path, json=json, **kw))
        if content is not None:
            return _Resp(self.c.post(path, data=content, **kw))
        return _Resp(self.c.post(path, data=data, **kw))


class _Resp:
    def __init__(self, r) -> None:
        self.r = r
        self.status_code = r.status_code
        self.headers = r.headers
        self.text = r.get_data(as_text=True)

    def json(self):
        return self.r.get_json()


def sso_post(client: FlaskClient, data: dict) -> _Resp:
    """POST an AuthnRequest to /saml/sso and follow a claim link as a browser does at once.

    An accepted POST answers 303 to ``/login/<txn>?claim=...`` and sets no cookie (an SP's
    auto-POST is cross-site); that same-site GET binds the sign-in to this browser and
    answers 303 to ``/login/<txn>``, which is returned. A refusal is returned as it came.
    """
    resp = client.post("/saml/sso", data=data)
    location = resp.headers.get("Location", "")
    if resp.status_code == 303 and "?claim=" in location:
        claimed = client.get(location)
        assert claimed.status_code == 303, claimed.text[:300]
        return claimed
    return resp


def device_login(client, device: SimDevice, location: str) -> _Resp:
    """Follow an SSO redirect to the login page, answer the challenge, continue."""
    assert location.startswith("/login/"), location
    txn = location.rsplit("/", 1)[-1]
    page = client.get(location)
    assert page.status_code == 200, page.text
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    status = client.get(f"/login/{txn}/status").json()
    assert status["status"] in ("verified", "denied"), status
    return client.get(f"/login/{txn}/continue")


@dataclass
class PostedForm:
    action: str
    saml_response: str
    relay_state: str | None

    @property
    def xml(self) -> bytes:
        return base64.b64decode(self.saml_response)


def posted_form(html: str) -> PostedForm:
    """The SAMLResponse form on a page (auto-POST or refusal)."""
    action = re.search(r'<form method="post" action="([^"]*)"', html)
    value = re.search(r'name="SAMLResponse" value="([^"]*)"', html)
    relay = re.search(r'name="RelayState" value="([^"]*)"', html)
    assert action and value, html
    return PostedForm(
        unescape(action.group(1)),
        unescape(value.group(1)),
        unescape(relay.group(1)) if relay else None,
    )


# ---- SP-side request building ----------------------------------------------------------


def deflate_b64(xml: bytes) -> str:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return base64.b64encode(c.compress(xml) + c.flush()).decode()


def authn_request_xml(
    *,
    issuer: str,
    acs_url: str | None = None,
    request_id: str | None = None,
    destination: str | None = IDP_PUBLIC + "/saml/sso",
    nameid_format: str | None = None,
    subject: str | None = None,
    issue_instant: dt.datetime | None = None,
    extra_attrs: str = "",
) -> bytes:
    """A hand-made AuthnRequest for negative tests (python3-saml makes the normal ones)."""
    request_id = request_id or "_" + uuid.uuid4().hex
    when = (issue_instant or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = f' ID="{request_id}" Version="2.0" IssueInstant="{when}"'
    if destination:
        attrs += f' Destination="{destination}"'
    if acs_url:
        attrs += f' AssertionConsumerServiceURL="{acs_url}" ProtocolBinding="{POST}"'
    subj = f"<saml:Subject><saml:NameID>{subject}</saml:NameID></saml:Subject>" if subject else ""
    policy = f'<samlp:NameIDPolicy Format="{nameid_format}"/>' if nameid_format else ""
    return (
        f'<samlp:AuthnRequest xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}"{attrs}'
        f"{extra_attrs}><saml:Issuer>{issuer}</saml:Issuer>{subj}{policy}</samlp:AuthnRequest>"
    ).encode()


def sign_enveloped(xml: bytes, key_pem: str, cert_pem: str) -> bytes:
    """Sign an AuthnRequest (POST binding) the way SPs do, with python3-saml's helper."""
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    signed = OneLogin_Saml2_Utils.add_sign(
        xml,
        key_pem,
        cert_pem,
        sign_algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        digest_algorithm="http://www.w3.org/2001/04/xmlenc#sha256",
    )
    return signed if isinstance(signed, bytes) else signed.encode()


def redirect_query(xml: bytes, relay_state: str | None = None, key_pem: str | None = None) -> str:
    """``SAMLRequest=...&RelayState=...[&SigAlg=...&Signature=...]`` (detached signature)."""
    params = [("SAMLRequest", deflate_b64(xml))]
    if relay_state is not None:
        params.append(("RelayState", relay_state))
    if key_pem:
        alg = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        params.append(("SigAlg", alg))
        signed = urlencode(params).encode()
        ctx = xmlsec.SignatureContext()
        ctx.key = xmlsec.Key.from_memory(key_pem.encode(), xmlsec.constants.KeyDataFormatPem)
        sig = ctx.sign_binary(signed, xmlsec.constants.TransformRsaSha256)
        return signed.decode() + "&" + urlencode({"Signature": base64.b64encode(sig).decode()})
    return urlencode(params)


def sp_metadata(
    entity_id: str,
    acs: list[str],
    *,
    cert_pem: str | None = None,
    authn_requests_signed: bool = False,
    nameid_format: str | None = None,
) -> bytes:
    """Minimal SP metadata (python3-saml makes it for the interop SPs)."""
    certs = ""
    if cert_pem:
        der = "".join(cert_pem.strip().splitlines()[1:-1])
        certs = (
            f'<md:KeyDescriptor><ds:KeyInfo xmlns:ds="{NS["ds"]}"><ds:X509Data>'
            f"<ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            "</md:KeyDescriptor>"
        )
    nameid = f"<md:NameIDFormat>{nameid_format}</md:NameIDFormat>" if nameid_format else ""
    endpoints = "".join(
        f'<md:AssertionConsumerService Binding="{POST}" Location="{url}" index="{i}"/>'
        for i, url in enumerate(acs)
    )
    signed = "true" if authn_requests_signed else "false"
    return (
        f'<md:EntityDescriptor xmlns:md="{NS["md"]}" entityID="{entity_id}">'
        f'<md:SPSSODescriptor AuthnRequestsSigned="{signed}" '
        f'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{certs}{nameid}{endpoints}</md:SPSSODescriptor></md:EntityDescriptor>"
    ).encode()


# ---- python3-saml SP ---------------------------------------------------------------------


def onelogin_settings(
    sp_base: str,
    idp_cert: str,
    *,
    nameid_format: str = "emailAddress",
    key_name: str = "onelogin-sp",
    encrypted: bool = False,
) -> dict:
    key, cert = cached_key_pair(key_name)
    return {
        "strict": True,
        "sp": {
            "entityId": sp_base + "/metadata",
            "assertionConsumerService": {"url": sp_base + "/acs", "binding": POST},
            "NameIDFormat": NAMEID_URNS[nameid_format],
            "x509cert": cert,
            "privateKey": key,
        },
        "idp": {
            "entityId": IDP_PUBLIC + "/saml/metadata",
            "singleSignOnService": {"url": IDP_PUBLIC + "/saml/sso", "binding": REDIRECT},
            "x509cert": idp_cert,
        },
        "security": {
            "authnRequestsSigned": True,
            "wantMessagesSigned": True,
            "wantAssertionsSigned": True,
            "wantAssertionsEncrypted": encrypted,
            "wantNameId": True,
            "requestedAuthnContext": False,
            "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "rejectDeprecatedAlgorithm": True,
        },
    }


def onelogin_request_data(url: str, post: dict | None = None) -> dict:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return {
        "https": "off",
        "http_host": u.netloc,
        "script_name": u.path,
        "get_data": {},
        "post_data": post or {},
    }


# ---- our own, stricter checks --------------------------------------------------------------


def _verify(node: etree._Element, cert_pem: str) -> None:
    sig = node.find("ds:Signature", NS)
    assert sig is not None, f"{node.tag} is not signed"
    ref = sig.find("ds:SignedInfo/ds:Reference", NS)
    assert ref.get("URI") == "#" + node.get("ID"), "signature does not cover this element"
    ctx = xmlsec.SignatureContext()
    ctx.register_id(node, "ID")
    ctx.key = xmlsec.Key.from_memory(cert_pem.encode(), xmlsec.constants.KeyDataFormatCertPem)
    ctx.verify(sig)


def strict_check(
    xml: bytes,
    *,
    idp_cert: str,
    sp_entity_id: str,
    acs_url: str,
    request_id: str | None,
    sign_response: bool = True,
    sign_assertion: bool = True,
    sp_key: str | None = None,
    now: dt.datetime | None = None,
    authn_context_class: str = "urn:devicetrust:ac:classes:device-bound",
    idp_public: str = IDP_PUBLIC,
) -> etree._Element:
    """Everything SAML core/profiles ask of a success Response, checked exactly."""
    now = now or dt.datetime.now(dt.UTC)
    root = etree.fromstring(xml)
    assert root.tag == f"{{{NS['samlp']}}}Response"
    assert root.get("Version") == "2.0"
    assert root.get("Destination") == acs_url
    assert root.get("InResponseTo") == request_id
    assert root.findtext("saml:Issuer", namespaces=NS) == idp_public + "/saml/metadata"
    code = root.find("samlp:Status/samlp:StatusCode", NS).get("Value")
    assert code == "urn:oasis:names:tc:SAML:2.0:status:Success"
    if sign_response:
        _verify(root, idp_cert)
    else:
        assert root.find("ds:Signature", NS) is None
    enc = root.findall("saml:EncryptedAssertion", NS)
    if enc:
        assert sp_key, "encrypted assertion but no SP key to open it"
        from onelogin.saml2.utils import OneLogin_Saml2_Utils

        data = enc[0].find("{http://www.w3.org/2001/04/xmlenc#}EncryptedData")
        alg = data.find("{http://www.w3.org/2001/04/xmlenc#}EncryptionMethod").get("Algorithm")
        assert alg == "http://www.w3.org/2009/xmlenc11#aes256-gcm"
        assertion = OneLogin_Saml2_Utils.decrypt_element(data, sp_key)
        assertion = etree.fromstring(etree.tostring(assertion))
    else:
        assertions = root.findall("saml:Assertion", NS)
        assert len(assertions) == 1
        assertion = assertions[0]
    if sign_assertion:
        _verify(assertion, idp_cert)
    issued = _t(assertion.get("IssueInstant"))
    assert abs((now - issued).total_seconds()) < 60
    conf = assertion.find("saml:Subject/saml:SubjectConfirmation", NS)
    assert conf.get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    data = conf.find("saml:SubjectConfirmationData", NS)
    assert data.get("Recipient") == acs_url  # exactly, not a substring
    assert data.get("InResponseTo") == request_id
    assert _t(data.get("NotOnOrAfter")) - issued == dt.timedelta(minutes=5)
    cond = assertion.find("saml:Conditions", NS)
    assert _t(cond.get("NotBefore")) == issued - dt.timedelta(seconds=30)
    assert _t(cond.get("NotOnOrAfter")) - issued == dt.timedelta(minutes=5)
    assert _t(cond.get("NotBefore")) <= now < _t(cond.get("NotOnOrAfter"))
    audiences = cond.findall("saml:AudienceRestriction/saml:Audience", NS)
    assert [a.text for a in audiences] == [sp_entity_id]  # present, and only the SP
    stmt = assertion.find("saml:AuthnStatement", NS)
    assert _t(stmt.get("SessionNotOnOrAfter")) > now
    assert stmt.get("SessionIndex")
    ref = stmt.findtext("saml:AuthnContext/saml:AuthnContextClassRef", namespaces=NS)
    assert ref == authn_context_class
    return assertion


def failure_check(
    xml: bytes, *, idp_cert: str, acs_url: str, request_id: str
) -> tuple[list[str], str | None]:
    """A signed status Response with no assertion; returns (status codes, StatusMessage)."""
    root = etree.fromstring(xml)
    assert root.tag == f"{{{NS['samlp']}}}Response"
    assert root.get("Destination") == acs_url
    assert root.get("InResponseTo") == request_id
    assert root.findtext("saml:Issuer", namespaces=NS) == IDP_PUBLIC + "/saml/metadata"
    assert root.find("saml:Assertion", NS) is None
    assert root.find("saml:EncryptedAssertion", NS) is None
    _verify(root, idp_cert)
    codes = [c.get("Value") for c in root.iter(f"{{{NS['samlp']}}}StatusCode")]
    return codes, root.findtext("samlp:Status/samlp:StatusMessage", namespaces=NS)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def attributes_of(assertion: etree._Element) -> dict[str, list[str]]:
    return {
        a.get("Name"): [v.text or "" for v in a.findall("saml:AttributeValue", NS)]
        for a in assertion.findall("saml:AttributeStatement/saml:Attribute", NS)
    }


def write_file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)
