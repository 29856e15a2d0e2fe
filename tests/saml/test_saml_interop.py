"""Interop: independent SPs accept our Responses, and our own checks are stricter than theirs.

A python3-saml SP in strict mode (wantMessagesSigned, wantAssertionsSigned) and
pysaml2's ``Saml2Client`` (verifying with Debian's ``xmlsec1``) each sign in,
through the in-process IdP and a simulated device, for every NameID format and
both key types. Every Response also passes :func:`tests.saml_support.strict_check`
(Audience present, Recipient == ACS exactly, Destination, InResponseTo, the time
window), which the peers do not all insist on.
"""

from __future__ import annotations

import base64

import pytest
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from idp_service.saml import api
from idp_service.saml.service import keys as keyring
from tests.saml_support import (
    IDP_PUBLIC,
    NAMEID_URNS,
    NS,
    FlaskClient,
    SimDevice,
    attributes_of,
    cached_key_pair,
    device_login,
    failure_check,
    onelogin_request_data,
    onelogin_settings,
    posted_form,
    strict_check,
    write_file,
)

FORMATS = ["emailAddress", "persistent", "transient", "unspecified"]
ALGS = {"rsa": "rsa-sha256", "ec": "ecdsa-sha256"}


@pytest.fixture
def idp(sqlite_url, tmp_path):
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": sqlite_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": IDP_PUBLIC,
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()


def enroll(app, client, email: str, display_name: str | None = "Alice Example") -> SimDevice:
    from idp_service.devices import enroll as enroll_mod
    from idp_service.directory import users

    svc = app.extensions["devicetrust"]
    with svc.db.session() as s:
        user = users.find(s, email) or users.create(s, email, display_name=display_name)
        code, _ = enroll_mod.create_code(s, user, ttl_seconds=600)
    device = SimDevice()
    device.register(client, code)
    return device


def idp_cert(app, key_type: str) -> str:
    with app.app_context():
        return keyring(app.extensions["devicetrust"]).active(key_type).cert_pem


def add_sp(app, metadata: str | bytes, **settings) -> dict:
    if isinstance(metadata, bytes):
        metadata = metadata.decode()
    return api.create_sp(app.extensions["devicetrust"].db, {"metadata_xml": metadata, **settings})


def onelogin_login(app, client, device, settings, relay_state="/after?x=1&y=<2>"):
    auth = OneLogin_Saml2_Auth(onelogin_request_data("http://sp.test/login"), settings)
    url = auth.login(return_to=relay_state)
    request_id = auth.get_last_request_id()
    assert url.startswith(IDP_PUBLIC + "/saml/sso?")
    r = client.get(url[len(IDP_PUBLIC) :])
    assert r.status_code == 303, r.text
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 200, page.text
    return request_id, posted_form(page.text)


def onelogin_accepts(settings, form, request_id):
    sp = OneLogin_Saml2_Auth(
        onelogin_request_data(
            form.action, {"SAMLResponse": form.saml_response, "RelayState": form.relay_state}
        ),
        settings,
    )
    sp.process_response(request_id=request_id)
    assert sp.get_errors() == [], sp.get_last_error_reason()
    assert sp.is_authenticated()
    return sp


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_python3_saml_strict_sp_accepts_every_nameid_format(idp, fmt, key_type):
    client = FlaskClient(idp)
    device = enroll(idp, client, "alice@example.com")
    settings = onelogin_settings("http://sp.test", idp_cert(idp, key_type), nameid_format=fmt)
    metadata = OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata()
    sp = add_sp(idp, metadata, signature_algorithm=ALGS[key_type])
    assert sp["nameid_format"] == fmt and sp["require_signed_requests"] is True

    request_id, form = onelogin_login(idp, client, device, settings)
    assert form.action == "http://sp.test/acs"
    assert form.relay_state == "/after?x=1&y=<2>"  # echoed unchanged
    sp_auth = onelogin_accepts(settings, form, request_id)

    assertion = strict_check(
        form.xml,
        idp_cert=idp_cert(idp, key_type),
        sp_entity_id="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id=request_id,
    )
    sig = assertion.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm")
    assert sig.endswith("ecdsa-sha256" if key_type == "ec" else "rsa-sha256")
    nameid = assertion.find("saml:Subject/saml:NameID", NS)
    assert nameid.get("Format") == NAMEID_URNS[fmt]
    assert sp_auth.get_nameid() == nameid.text
    if fmt in ("emailAddress", "unspecified"):
        assert nameid.text == "alice@example.com"
    else:
        assert "alice" not in nameid.text and len(nameid.text) >= 22
    attrs = sp_auth.get_attributes()
    assert attrs["email"] == ["alice@example.com"]
    assert attrs["displayName"] == ["Alice Example"]
    assert attrs["deviceId"] == [device.id]
    assert attrs["devicePosture"] == ["unknown"]
    assert attrs.get("groups", []) == []


def test_persistent_nameid_is_stable_per_sp_and_transient_is_not(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "bob@example.com", None)
    cert = idp_cert(idp, "rsa")
    seen: dict[str, list[str]] = {}
    for fmt, base in (
        ("persistent", "http://sp-a.test"),
        ("persistent", "http://sp-b.test"),
        ("transient", "http://sp-c.test"),
    ):
        settings = onelogin_settings(base, cert, nameid_format=fmt)
        add_sp(idp, OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata())
        for _ in range(2):
            request_id, form = onelogin_login(idp, client, device, settings)
            seen.setdefault(base, []).append(
                onelogin_accepts(settings, form, request_id).get_nameid()
            )
    a, b, c = seen["http://sp-a.test"], seen["http://sp-b.test"], seen["http://sp-c.test"]
    assert a[0] == a[1] and b[0] == b[1]  # stable per SP + user
    assert a[0] != b[0]  # pairwise: not correlatable across SPs
    assert c[0] != c[1]  # transient: new each time


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_encrypted_assertion_aes_gcm_rsa_oaep_opens_in_python3_saml(idp, key_type):
    client = FlaskClient(idp)
    device = enroll(idp, client, "carol@example.com")
    cert = idp_cert(idp, key_type)
    settings = onelogin_settings("http://sp.test", cert, encrypted=True)
    metadata = OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata()
    add_sp(idp, metadata, encrypt_assertion=True, signature_algorithm=ALGS[key_type])
    request_id, form = onelogin_login(idp, client, device, settings)
    root = etree.fromstring(form.xml)
    assert root.find("saml:Assertion", NS) is None
    assert root.find("saml:EncryptedAssertion", NS) is not None
    assert b"carol@example.com" not in form.xml
    sp_auth = onelogin_accepts(settings, form, request_id)
    assert sp_auth.get_nameid() == "carol@example.com"
    strict_check(
        form.xml,
        idp_cert=cert,
        sp_entity_id="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id=request_id,
        sp_key=cached_key_pair("onelogin-sp")[0],
    )


@pytest.mark.parametrize("what", ["response", "assertion"])
def test_signing_only_the_response_or_only_the_assertion(idp, what):
    client = FlaskClient(idp)
    device = enroll(idp, client, "dave@example.com")
    cert = idp_cert(idp, "rsa")
    settings = onelogin_settings("http://sp.test", cert)
    settings["security"]["wantMessagesSigned"] = what == "response"
    settings["security"]["wantAssertionsSigned"] = what == "assertion"
    metadata = OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata()
    add_sp(idp, metadata, sign_response=what == "response", sign_assertion=what == "assertion")
    request_id, form = onelogin_login(idp, client, device, settings)
    onelogin_accepts(settings, form, request_id)
    strict_check(
        form.xml,
        idp_cert=cert,
        sp_entity_id="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id=request_id,
        sign_response=what == "response",
        sign_assertion=what == "assertion",
    )


# ---- pysaml2 ------------------------------------------------------------------------------


def pysaml2_client(tmp_path, idp_metadata: str, fmt: str):
    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client
    from saml2.config import SPConfig

    key, cert = cached_key_pair("pysaml2-sp")
    key_file = write_file(tmp_path, "sp-key.pem", key)
    cert_file = write_file(tmp_path, "sp-cert.pem", cert)
    base = "http://pysaml2.test"
    config = SPConfig()
    config.load(
        {
            "entityid": base + "/metadata",
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(base + "/acs", BINDING_HTTP_POST)]
                    },
                    "want_response_signed": True,
                    "want_assertions_signed": True,
                    "authn_requests_signed": True,
                    "allow_unsolicited": False,
                    "name_id_format": NAMEID_URNS[fmt],
                    "name_id_format_allow_create": True,
                }
            },
            "key_file": key_file,
            "cert_file": cert_file,
            "encryption_keypairs": [{"key_file": key_file, "cert_file": cert_file}],
            "metadata": {"inline": [idp_metadata]},
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "allow_unknown_attributes": True,
            "accepted_time_diff": 30,
        }
    )
    return Saml2Client(config), config


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_pysaml2_client_accepts_every_nameid_format(idp, tmp_path, fmt, key_type):
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.metadata import entity_descriptor
    from saml2.xmldsig import SIG_RSA_SHA256

    client = FlaskClient(idp)
    device = enroll(idp, client, "erin@example.com")
    idp_md = client.get(f"/saml/metadata?key_type={key_type}").text
    sp_client, config = pysaml2_client(tmp_path, idp_md, fmt)
    sp = add_sp(
        idp,
        str(entity_descriptor(config)),
        nameid_format=fmt,
        signature_algorithm=ALGS[key_type],
        require_signed_requests=True,
    )
    assert sp["entity_id"] == "http://pysaml2.test/metadata"

    request_id, info = sp_client.prepare_for_authenticate(
        entityid=IDP_PUBLIC + "/saml/metadata",
        relay_state="state-1",
        binding=BINDING_HTTP_REDIRECT,
        sign=True,
        sigalg=SIG_RSA_SHA256,
    )
    location = dict(info["headers"])["Location"]
    r = client.get(location[len(IDP_PUBLIC) :])
    assert r.status_code == 303, r.text
    form = posted_form(device_login(client, device, r.headers["Location"]).text)
    assert form.relay_state == "state-1"

    parsed = sp_client.parse_authn_request_response(
        form.saml_response, BINDING_HTTP_POST, outstanding={request_id: "/"}
    )
    assert parsed is not None and parsed.in_response_to == request_id
    assert parsed.name_id.format == NAMEID_URNS[fmt]
    assert parsed.ava["email"] == ["erin@example.com"]
    assert parsed.ava["deviceId"] == [device.id]
    assertion = strict_check(
        base64.b64decode(form.saml_response),
        idp_cert=idp_cert(idp, key_type),
        sp_entity_id="http://pysaml2.test/metadata",
        acs_url="http://pysaml2.test/acs",
        request_id=request_id,
    )
    assert assertion.find("saml:Subject/saml:NameID", NS).text == parsed.name_id.text
    assert attributes_of(assertion)["email"] == ["erin@example.com"]


# ---- RequestedAuthnContext ------------------------------------------------------------------

AC = "urn:oasis:names:tc:SAML:2.0:ac:classes:"
DEVICE_BOUND = "urn:devicetrust:ac:classes:device-bound"
NO_AUTHN_CONTEXT = [
    "urn:oasis:names:tc:SAML:2.0:status:Responder",
    "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext",
]


def _sso_events(app, code: str) -> list:
    from sqlalchemy import select

    from idp_service.platform.models import AuditEvent

    with app.extensions["devicetrust"].db.session() as s:
        return list(
            s.scalars(
                select(AuditEvent).where(AuditEvent.action == "saml.sso", AuditEvent.code == code)
            )
        )


def _transactions(app) -> int:
    from sqlalchemy import func, select

    from idp_service.platform.models import LoginTransaction

    with app.extensions["devicetrust"].db.session() as s:
        return s.scalar(select(func.count()).select_from(LoginTransaction))


def test_python3_saml_exact_password_gets_a_signed_no_authn_context_before_any_device(idp):
    cert = idp_cert(idp, "rsa")
    settings = onelogin_settings("http://sp.test", cert)
    settings["security"]["requestedAuthnContext"] = True  # exact PasswordProtectedTransport
    add_sp(idp, OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata())
    client = FlaskClient(idp)
    auth = OneLogin_Saml2_Auth(onelogin_request_data("http://sp.test/login"), settings)
    url = auth.login(return_to="/back")
    request_id = auth.get_last_request_id()
    before = _transactions(idp)

    r = client.get(url[len(IDP_PUBLIC) :])
    # Answered at the SSO endpoint: no login transaction, no device asked.
    assert r.status_code == 400
    assert "/login/" not in r.headers.get("Location", "")
    assert _transactions(idp) == before
    form = posted_form(r.text)
    assert form.action == "http://sp.test/acs" and form.relay_state == "/back"
    codes, message = failure_check(
        form.xml, idp_cert=cert, acs_url="http://sp.test/acs", request_id=request_id
    )
    assert codes == NO_AUTHN_CONTEXT and message == "saml_no_authn_context"
    events = _sso_events(idp, "saml_no_authn_context")
    assert len(events) == 1 and events[0].outcome == "rejected"
    assert events[0].details["request_id"] == request_id
    assert events[0].details["requested_authn_context"] == {
        "comparison": "exact",
        "classes": [AC + "PasswordProtectedTransport"],
    }

    # The SP library reads it as a failed sign-in with the Responder status.
    sp = OneLogin_Saml2_Auth(
        onelogin_request_data(
            form.action, {"SAMLResponse": form.saml_response, "RelayState": form.relay_state}
        ),
        settings,
    )
    sp.process_response(request_id=request_id)
    assert not sp.is_authenticated()
    assert sp.get_errors() == ["invalid_response"]
    assert "was not Success, was Responder" in sp.get_last_error_reason()


@pytest.mark.parametrize(
    "classes,expected",
    [([DEVICE_BOUND], DEVICE_BOUND), ([AC + "PasswordProtectedTransport"], DEVICE_BOUND)],
)
def test_python3_saml_minimum_is_satisfied_by_the_device_check(idp, classes, expected):
    client = FlaskClient(idp)
    device = enroll(idp, client, "fay@example.com")
    cert = idp_cert(idp, "rsa")
    settings = onelogin_settings("http://sp.test", cert)
    settings["security"]["requestedAuthnContext"] = classes
    settings["security"]["requestedAuthnContextComparison"] = "minimum"
    add_sp(idp, OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata())
    request_id, form = onelogin_login(idp, client, device, settings)
    onelogin_accepts(settings, form, request_id)
    strict_check(
        form.xml,
        idp_cert=cert,
        sp_entity_id="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id=request_id,
        authn_context_class=expected,
    )


def test_python3_saml_lenient_sp_gets_the_device_bound_class_anyway(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "gus@example.com")
    cert = idp_cert(idp, "rsa")
    settings = onelogin_settings("http://sp.test", cert)
    settings["security"]["requestedAuthnContext"] = True  # exact PasswordProtectedTransport
    metadata = OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata()
    sp = add_sp(idp, metadata, requested_authn_context="lenient")
    assert sp["requested_authn_context"] == "lenient"
    request_id, form = onelogin_login(idp, client, device, settings)
    onelogin_accepts(settings, form, request_id)
    strict_check(
        form.xml,
        idp_cert=cert,
        sp_entity_id="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id=request_id,
        authn_context_class=DEVICE_BOUND,  # never a password class we did not check
    )


def _pysaml2_authn_request(sp_client, classes: list[str], comparison: str):
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.saml import AuthnContextClassRef
    from saml2.samlp import RequestedAuthnContext
    from saml2.xmldsig import SIG_RSA_SHA256

    requested = RequestedAuthnContext(
        authn_context_class_ref=[AuthnContextClassRef(text=c) for c in classes],
        comparison=comparison,
    )
    request_id, info = sp_client.prepare_for_authenticate(
        entityid=IDP_PUBLIC + "/saml/metadata",
        relay_state="state-2",
        binding=BINDING_HTTP_REDIRECT,
        sign=True,
        sigalg=SIG_RSA_SHA256,
        requested_authn_context=requested,
    )
    return request_id, dict(info["headers"])["Location"]


def test_pysaml2_reads_no_authn_context_as_that_status(idp, tmp_path):
    from saml2 import BINDING_HTTP_POST
    from saml2.metadata import entity_descriptor
    from saml2.response import StatusNoAuthnContext

    client = FlaskClient(idp)
    sp_client, config = pysaml2_client(tmp_path, client.get("/saml/metadata").text, "emailAddress")
    add_sp(idp, str(entity_descriptor(config)), require_signed_requests=True)
    request_id, location = _pysaml2_authn_request(
        sp_client, [AC + "PasswordProtectedTransport"], "exact"
    )
    r = client.get(location[len(IDP_PUBLIC) :])
    assert r.status_code == 400
    form = posted_form(r.text)
    codes, _ = failure_check(
        form.xml,
        idp_cert=idp_cert(idp, "rsa"),
        acs_url="http://pysaml2.test/acs",
        request_id=request_id,
    )
    assert codes == NO_AUTHN_CONTEXT
    with pytest.raises(StatusNoAuthnContext):
        sp_client.parse_authn_request_response(
            form.saml_response, BINDING_HTTP_POST, outstanding={request_id: "/"}
        )


@pytest.mark.parametrize(
    "classes,comparison,expected",
    [
        ([AC + "unspecified"], "exact", AC + "unspecified"),
        ([AC + "PasswordProtectedTransport"], "better", DEVICE_BOUND),
    ],
)
def test_pysaml2_gets_the_class_it_asked_for(idp, tmp_path, classes, comparison, expected):
    from saml2 import BINDING_HTTP_POST
    from saml2.metadata import entity_descriptor

    client = FlaskClient(idp)
    device = enroll(idp, client, "hal@example.com")
    sp_client, config = pysaml2_client(tmp_path, client.get("/saml/metadata").text, "emailAddress")
    add_sp(idp, str(entity_descriptor(config)), require_signed_requests=True)
    request_id, location = _pysaml2_authn_request(sp_client, classes, comparison)
    r = client.get(location[len(IDP_PUBLIC) :])
    assert r.status_code == 303, r.text
    form = posted_form(device_login(client, device, r.headers["Location"]).text)
    parsed = sp_client.parse_authn_request_response(
        form.saml_response, BINDING_HTTP_POST, outstanding={request_id: "/"}
    )
    assert parsed is not None and parsed.in_response_to == request_id
    assert parsed.authn_info()[0][0] == expected
    strict_check(
        form.xml,
        idp_cert=idp_cert(idp, "rsa"),
        sp_entity_id="http://pysaml2.test/metadata",
        acs_url="http://pysaml2.test/acs",
        request_id=request_id,
        authn_context_class=expected,
    )
