"""Hostile AuthnRequests, modelled on Keycloak's SamlXMLAttacksTest and BasicSamlTest.

Each is refused in well under a second, with an error page (or a SAML status
at a trusted ACS) and never a 500, and writes nothing but one audit event.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import zlib
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import func, inspect, select, text

from idp_service.platform.models import AuditEvent
from idp_service.saml import api
from tests.saml_support import (
    IDP_PUBLIC,
    NS,
    FlaskClient,
    authn_request_xml,
    cached_key_pair,
    deflate_b64,
    posted_form,
    redirect_query,
    sign_enveloped,
    sp_metadata,
)

SP = "http://sp.test/metadata"
ACS = "http://sp.test/acs"
SIGNED_SP = "http://signed-sp.test/metadata"
SIGNED_ACS = "http://signed-sp.test/acs"
STATUS_CODE = "{urn:oasis:names:tc:SAML:2.0:protocol}StatusCode"


@pytest.fixture
def idp(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    _, cert = cached_key_pair("attack-sp")
    api.create_sp(
        db,
        {
            "metadata_xml": sp_metadata(SP, [ACS, "http://sp.test/acs2"], cert_pem=cert).decode(),
            "nameid_format": "emailAddress",
        },
    )
    api.create_sp(
        db,
        {
            "metadata_xml": sp_metadata(
                SIGNED_SP, [SIGNED_ACS], cert_pem=cert, authn_requests_signed=True
            ).decode()
        },
    )
    with service_ctx.app_context():
        # Create the signing key now, so a refusal's "writes" are only the audit event.
        from idp_service.saml.service import keys

        keys(service_ctx.extensions["devicetrust"]).active("rsa")
    return service_ctx


def _counts(app) -> dict[str, int]:
    engine = app.extensions["devicetrust"].db.engine
    with engine.connect() as conn:
        names = inspect(conn).get_table_names()
        return {
            n: conn.execute(text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one()  # noqa: S608
            for n in names
            if n != "alembic_version"
        }


def _audit(app, **where) -> list[AuditEvent]:
    with app.extensions["devicetrust"].db.session() as s:
        q = select(AuditEvent).order_by(AuditEvent.id)
        for k, v in where.items():
            q = q.where(getattr(AuditEvent, k) == v)
        return list(s.scalars(q))


def refused(app, send, code: str, status: int | None = None):
    """Send one hostile request; check status, page, and that only audit was written."""
    before = _counts(app)
    resp = send(FlaskClient(app))
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    if status is not None:
        assert resp.status_code == status
    assert f'<code id="code">{code}</code>' in resp.text, resp.text[:2000]
    after = _counts(app)
    assert after.pop("audit_events") == before.pop("audit_events") + 1
    assert after == before, "a refused request wrote more than its audit event"
    last = _audit(app)[-1]
    assert last.action == "saml.sso" and last.outcome == "rejected" and last.code == code
    return resp


def post(xml: bytes, relay_state: str | None = None):
    data = {"SAMLRequest": base64.b64encode(xml).decode()}
    if relay_state is not None:
        data["RelayState"] = relay_state
    return lambda c: c.post("/saml/sso", data=data)


def get(query: str):
    return lambda c: c.get("/saml/sso?" + query)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1" Version="2.0"
 IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>&lol9;</saml:Issuer></samlp:AuthnRequest>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a2" Version="2.0"
 IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>&xxe;</saml:Issuer></samlp:AuthnRequest>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE samlp:AuthnRequest SYSTEM "http://127.0.0.1:1/evil.dtd">
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a3" Version="2.0"
 IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>x</saml:Issuer></samlp:AuthnRequest>"""


@pytest.mark.parametrize("doc", [BILLION_LAUGHS, XXE, EXTERNAL_DTD], ids=["laughs", "xxe", "dtd"])
def test_dtd_entities_and_billion_laughs_are_refused_on_both_bindings(idp, doc):
    refused(idp, post(doc), "saml_dtd_forbidden", 400)
    refused(idp, get(urlencode({"SAMLRequest": deflate_b64(doc)})), "saml_dtd_forbidden", 400)


def test_doctype_in_utf16_is_refused_too(idp):
    doc = XXE.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>')
    refused(idp, post(doc.decode().encode("utf-16")), "saml_dtd_forbidden", 400)


def test_deflate_bomb_is_cut_off(idp):
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    payload = bomb.compress(b"<" + b"a" * (20 * 1024 * 1024)) + bomb.flush()
    assert len(payload) < 40 * 1024  # 20 MB in 20 kB
    query = urlencode({"SAMLRequest": base64.b64encode(payload).decode()})
    refused(idp, get(query), "saml_inflate_limit", 413)


def test_oversized_request_is_refused(idp):
    big = "A" * (200 * 1024)
    refused(idp, lambda c: c.post("/saml/sso", data={"SAMLRequest": big}), "saml_too_large", 413)


@pytest.mark.parametrize(
    "acs",
    [
        "http://evil.test/acs",
        "http://sp.test/acs/",
        "http://sp.test/acs?x=1",
        "http://sp.test/acs.evil.test",
        "http://sp.test/acs2/../acs",
        "HTTP://SP.TEST/acs",
    ],
)
def test_unknown_acs_url_is_refused_no_prefix_or_wildcard(idp, acs):
    xml = authn_request_xml(issuer=SP, acs_url=acs)
    refused(idp, get(redirect_query(xml)), "saml_acs_mismatch", 400)


def test_unknown_acs_index_is_refused(idp):
    xml = authn_request_xml(issuer=SP, extra_attrs=' AssertionConsumerServiceIndex="7"')
    refused(idp, get(redirect_query(xml)), "saml_acs_mismatch", 400)


@pytest.mark.parametrize("index", ["\u00b2", "\u2460", "-1", "1.0"])
def test_an_acs_index_that_is_not_ascii_digits_is_malformed(idp, index):
    xml = authn_request_xml(issuer=SP, extra_attrs=f' AssertionConsumerServiceIndex="{index}"')
    refused(idp, get(redirect_query(xml)), "saml_malformed", 400)


def test_wrong_destination_is_refused(idp):
    xml = authn_request_xml(issuer=SP, destination="http://other-idp.test/saml/sso")
    refused(idp, get(redirect_query(xml)), "saml_wrong_destination", 400)


def test_replayed_request_id_is_refused(idp):
    xml = authn_request_xml(issuer=SP, request_id="_replay-me-1")
    first = FlaskClient(idp).get("/saml/sso?" + redirect_query(xml))
    assert first.status_code == 303 and first.headers["Location"].startswith("/login/")
    refused(idp, get(redirect_query(xml)), "saml_replayed", 409)
    # The same ID by the other binding is the same request.
    refused(idp, post(xml), "saml_replayed", 409)


def test_unsigned_request_is_refused_where_signatures_are_required(idp):
    xml = authn_request_xml(issuer=SIGNED_SP)
    refused(idp, get(redirect_query(xml)), "saml_signature_required", 403)
    refused(idp, post(xml), "saml_signature_required", 403)


def test_signed_requests_verify_on_both_bindings(idp):
    key, _ = cached_key_pair("attack-sp")
    xml = authn_request_xml(issuer=SIGNED_SP)
    ok = FlaskClient(idp).get("/saml/sso?" + redirect_query(xml, "rs", key_pem=key))
    assert ok.status_code == 303 and ok.headers["location"].startswith("/login/"), ok.text
    ok = FlaskClient(idp).post(
        "/saml/sso",
        data={
            "SAMLRequest": base64.b64encode(
                sign_enveloped(
                    authn_request_xml(issuer=SIGNED_SP), key, cached_key_pair("attack-sp")[1]
                )
            ).decode()
        },
    )
    assert ok.status_code == 303 and ok.headers["location"].startswith("/login/"), ok.text


def test_bad_signatures_are_refused(idp):
    key, cert = cached_key_pair("attack-sp")
    other_key, other_cert = cached_key_pair("someone-else")
    # Signed by a key the SP's metadata does not have.
    xml = authn_request_xml(issuer=SIGNED_SP)
    refused(idp, get(redirect_query(xml, key_pem=other_key)), "saml_signature_invalid", 400)
    refused(idp, post(sign_enveloped(xml, other_key, other_cert)), "saml_signature_invalid", 400)
    # RelayState changed after signing (the detached signature covers it).
    query = redirect_query(authn_request_xml(issuer=SIGNED_SP), "good", key_pem=key)
    refused(idp, get(query.replace("RelayState=good", "RelayState=evil")), "saml_signature_invalid")
    # Content changed after signing.
    signed = sign_enveloped(authn_request_xml(issuer=SIGNED_SP), key, cert)
    tampered = signed.replace(b'Version="2.0"', b'Version="2.0" ForceAuthn="true"')
    refused(idp, post(tampered), "saml_signature_invalid", 400)
    # Signature wrapping: the signature covers another element than the request.
    wrapped = re.sub(rb'ID="([^"]+)"', rb'ID="_other"', signed, count=1)
    refused(idp, post(wrapped), "saml_signature_invalid", 400)
    # SHA-1 is not accepted.
    sha1 = redirect_query(authn_request_xml(issuer=SIGNED_SP), key_pem=key).replace(
        quote("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", safe=""),
        quote("http://www.w3.org/2000/09/xmldsig#rsa-sha1", safe=""),
    )
    refused(idp, get(sha1), "saml_signature_invalid", 400)


@pytest.mark.parametrize(
    "request_id", ["${jndi:ldap://127.0.0.1/x}", "${7*7}", "_a<b>", "1abc", "_" + "a" * 300]
)
def test_interpolation_and_markup_in_ids_are_refused(idp, request_id):
    from xml.sax.saxutils import escape

    value = escape(request_id).encode()
    xml = authn_request_xml(issuer=SP).replace(b'ID="_', b'ID="' + value + b'" X="')
    refused(idp, get(redirect_query(xml)), "saml_bad_id", 400)


def test_relay_state_with_markup_is_echoed_unchanged_and_escaped(idp):
    markup = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    client = FlaskClient(idp)
    xml = authn_request_xml(issuer=SP)
    resp = client.get("/saml/sso?" + redirect_query(xml, markup))
    assert resp.status_code == 303
    txn = resp.headers["Location"].rsplit("/", 1)[-1]
    with idp.app_context():
        from idp_service.platform.models import LoginTransaction

        with idp.extensions["devicetrust"].db.session() as s:
            assert s.get(LoginTransaction, txn).context["relay_state"] == markup
    # IsPassive makes the IdP answer at the ACS at once: the RelayState goes into that form.
    passive = authn_request_xml(issuer=SP, extra_attrs=' IsPassive="true"')
    page = client.get("/saml/sso?" + redirect_query(passive, markup))
    assert page.status_code == 400
    assert markup not in page.text and "<script>alert" not in page.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img" in page.text
    form = posted_form(page.text)
    assert form.relay_state == markup


@pytest.mark.parametrize("name", ["SAMLRequest", "RelayState"])
def test_a_post_field_given_twice_is_refused_as_on_redirect(idp, name):
    # Which copy counts must not depend on the parser (a proxy may read the last one).
    fields = {
        "SAMLRequest": base64.b64encode(authn_request_xml(issuer=SP)).decode(),
        "RelayState": "one",
    }
    body = urlencode([*fields.items(), (name, fields[name] + "x")])
    form = "application/x-www-form-urlencoded"
    refused(
        idp, lambda c: c.post("/saml/sso", content=body, content_type=form), "saml_malformed", 400
    )


def test_relay_state_too_long_is_refused(idp):
    xml = authn_request_xml(issuer=SP)
    refused(idp, get(redirect_query(xml, "x" * 2000)), "saml_relay_state_too_long", 400)


def test_unknown_sp_disabled_sp_old_request_and_garbage(idp):
    refused(
        idp,
        get(redirect_query(authn_request_xml(issuer="http://nobody.test"))),
        "saml_unknown_sp",
        404,
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    refused(
        idp,
        get(redirect_query(authn_request_xml(issuer=SP, issue_instant=old))),
        "saml_expired_request",
        400,
    )
    refused(idp, get("SAMLRequest=%%%not-base64"), "saml_malformed", 400)
    refused(
        idp,
        get(urlencode({"SAMLRequest": base64.b64encode(b"not deflate").decode()})),
        "saml_malformed",
    )
    refused(idp, post(b"<notxml"), "saml_malformed", 400)
    refused(
        idp,
        post(b'<samlp:Response xmlns:samlp="' + NS["samlp"].encode() + b'"/>'),
        "saml_malformed",
    )
    q = redirect_query(authn_request_xml(issuer=SP))
    refused(idp, get(q + "&" + q), "saml_malformed", 400)
    refused(idp, get(""), "saml_malformed", 400)
    api.update_sp(idp.extensions["devicetrust"].db, SP, {"enabled": False})
    refused(idp, get(redirect_query(authn_request_xml(issuer=SP))), "saml_sp_disabled", 403)


def test_requests_the_idp_will_not_serve_get_a_saml_status_at_the_acs(idp):
    cases = [
        (' IsPassive="true"', None, "urn:oasis:names:tc:SAML:2.0:status:NoPassive"),
        ("", NS_PERSISTENT, "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"),
    ]
    for extra, fmt, second in cases:
        before = _counts(idp)
        xml = authn_request_xml(issuer=SP, extra_attrs=extra, nameid_format=fmt)
        page = FlaskClient(idp).get("/saml/sso?" + redirect_query(xml))
        assert page.status_code == 400
        form = posted_form(page.text)
        assert form.action == ACS
        from lxml import etree

        root = etree.fromstring(form.xml)
        codes = [c.get("Value") for c in root.iter(STATUS_CODE)]
        assert codes[1] == second
        assert root.find("saml:Assertion", NS) is None
        after = _counts(idp)
        assert after.pop("audit_events") == before.pop("audit_events") + 1
        assert after == before


NS_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def test_idp_initiated_only_where_allowed(idp):
    refused(
        idp,
        lambda c: c.get("/saml/idp-initiated?sp=" + quote(SP)),
        "saml_idp_initiated_disabled",
        403,
    )
    refused(idp, lambda c: c.get("/saml/idp-initiated?sp=nobody"), "saml_unknown_sp", 404)
    api.update_sp(idp.extensions["devicetrust"].db, SP, {"allow_idp_initiated": True})
    ok = FlaskClient(idp).get("/saml/idp-initiated?sp=" + quote(SP))
    assert ok.status_code == 303 and ok.headers["Location"].startswith("/login/")


@pytest.mark.parametrize("sp", ["a%00b", quote(SP) + "%00"])
def test_idp_initiated_sp_with_a_nul_is_unknown_not_a_500(idp, sp):
    # PostgreSQL refuses a NUL in a query; no SP can be named with one.
    refused(idp, lambda c: c.get("/saml/idp-initiated?sp=" + sp), "saml_unknown_sp", 404)


def test_metadata_lists_sso_endpoints_and_key(idp):
    from lxml import etree

    resp = FlaskClient(idp).get("/saml/metadata")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/samlmetadata+xml")
    root = etree.fromstring(resp.r.get_data())
    assert root.get("entityID") == IDP_PUBLIC + "/saml/metadata"
    sso = root.findall("md:IDPSSODescriptor/md:SingleSignOnService", NS)
    assert {(s.get("Binding").rsplit(":", 1)[-1], s.get("Location")) for s in sso} == {
        ("HTTP-Redirect", IDP_PUBLIC + "/saml/sso"),
        ("HTTP-POST", IDP_PUBLIC + "/saml/sso"),
    }
    assert len(root.findall(".//ds:X509Certificate", NS)) == 1
    with idp.extensions["devicetrust"].db.session() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() >= 1
