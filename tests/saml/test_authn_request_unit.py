"""Receiving an AuthnRequest, each gate on its own: every limit at the value allowed and one
beyond, every refusal with its code and status, every field the parser reads, and every
way ``check`` and ``policy_check`` accept or refuse a request against its SP.

Written for the mutation run over ``idp_service/saml/protocol/authn_request.py``: the
end-to-end tests reach these functions inside the service (never credited to an
in-process mutation target), and the property tests only say that nothing but
``SamlError`` comes out. Requests are built here, signed with xmlsec (enveloped, POST) or
over the query string (detached, Redirect) with the SP's own key.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import tracemalloc
import zlib
from urllib.parse import quote, quote_plus

import pytest
import xmlsec
from lxml import etree

from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_request as ar
from idp_service.saml.protocol import sp_view
from idp_service.saml.protocol.constants import (
    AC_PASSWORD,
    AC_UNSPECIFIED,
    AUTHN_CONTEXT_DEVICE_BOUND,
    BINDING_POST,
    BINDING_REDIRECT,
    NAMEID_FORMATS,
    NAMEID_UNSPECIFIED,
    STATUS_INVALID_NAMEID_POLICY,
    STATUS_NO_AUTHN_CONTEXT,
    STATUS_NO_PASSIVE,
    STATUS_REQUEST_DENIED,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
)
from idp_service.saml.tables import ServiceProvider
from tests.saml_support import authn_request_xml, cached_key_pair

SSO = "http://127.0.0.1:8000/saml/sso"
SP = "http://unit.sp.test/metadata"
ACS = "http://unit.sp.test/acs"
ACS_2 = "http://unit.sp.test/acs-2"
ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
RSA_SHA256 = xmlsec.constants.TransformRsaSha256.href
NOW = dt.datetime(2026, 12, 6, 9, 0, 0, tzinfo=dt.UTC)


def _keys() -> tuple[str, str]:
    return cached_key_pair("authn-unit-sp")


def _sp(**overrides) -> ServiceProvider:
    values = {
        "id": "sp-unit",
        "entity_id": SP,
        "name": "Unit SP",
        "enabled": True,
        "acs": [
            {"binding": BINDING_POST, "location": ACS, "index": 0, "is_default": True},
            {"binding": BINDING_POST, "location": ACS_2, "index": 1, "is_default": None},
        ],
        "signing_certs": [_keys()[1]],
        "encryption_certs": [],
        "nameid_format": "emailAddress",
        "attributes": {"email": "mail"},
        "require_signed_requests": False,
        "sign_response": True,
        "sign_assertion": True,
        "signature_algorithm": "rsa-sha256",
        "encrypt_assertion": False,
        "allow_idp_initiated": False,
        "identity_broker": False,
        "session_minutes": 480,
        "requested_authn_context": "strict",
    }
    values.update(overrides)
    return ServiceProvider(**values)


def _xml(**kw) -> bytes:
    kw.setdefault("issuer", SP)
    kw.setdefault("issue_instant", NOW)
    kw.setdefault("destination", SSO)
    return authn_request_xml(**kw)


def _deflate(data: bytes, level: int = 9) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _refused(fn, *args, code: str, status: int = 400, **kw) -> SamlError:
    with pytest.raises(SamlError) as refused:
        fn(*args, **kw)
    assert refused.value.code == code, refused.value
    assert refused.value.status == status, refused.value
    return refused.value


def _sign_enveloped(xml: bytes, key_pem: str | None = None) -> bytes:
    root = etree.fromstring(xml)
    sig = xmlsec.template.create(
        root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds"
    )
    root.insert(1, sig)
    ref = xmlsec.template.add_reference(
        sig, xmlsec.constants.TransformSha256, uri="#" + root.get("ID")
    )
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
    ctx = xmlsec.SignatureContext()
    ctx.register_id(root, "ID")
    ctx.key = xmlsec.Key.from_memory(
        (key_pem or _keys()[0]).encode(), xmlsec.constants.KeyDataFormatPem
    )
    ctx.sign(sig)
    return etree.tostring(root)


def _sign_detached(data: bytes, key_pem: str | None = None) -> bytes:
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(
        (key_pem or _keys()[0]).encode(), xmlsec.constants.KeyDataFormatPem
    )
    return ctx.sign_binary(data, xmlsec.constants.TransformRsaSha256)


def _redirect(xml: bytes, relay_state: str | None = None, *, sign: bool = False) -> bytes:
    """A Redirect-binding query string, signed over its exact bytes when ``sign``."""
    query = "SAMLRequest=" + quote(_b64(_deflate(xml)), safe="")
    if relay_state is not None:
        query += "&RelayState=" + quote(relay_state, safe="")
    if sign:
        query += "&SigAlg=" + quote(RSA_SHA256, safe="")
        signature = _sign_detached(query.encode())
        query += "&Signature=" + quote(_b64(signature), safe="")
    return query.encode()


def _post(xml: bytes, relay_state: str | None = None) -> ar.Incoming:
    return ar.read_post(_b64(xml), relay_state)


def _check(incoming: ar.Incoming, sp: ServiceProvider | None = None, **kw) -> ar.Accepted:
    kw.setdefault("now", NOW)
    sp = _sp() if sp is None else sp
    return ar.check(incoming, ar.parse(incoming.xml), sp, sso_url=SSO, **kw)


# ---- 1. reading the binding: base64 -----------------------------------------------------------


def test_post_base64_limit_is_exact():
    at_limit = "A" * ar.MAX_ENCODED  # valid base64 (a multiple of 4), decodes to zeros
    assert ar.read_post(at_limit, None).xml == bytes(ar.MAX_ENCODED * 3 // 4)
    _refused(ar.read_post, at_limit + "A", None, code="saml_too_large", status=413)


def test_base64_with_whitespace_inside_is_read():
    text = _b64(b"<a/>" * 30)
    spaced = " \n".join(text[i : i + 8] for i in range(0, len(text), 8)) + "\r\n"
    assert ar.read_post(spaced, None).xml == b"<a/>" * 30


@pytest.mark.parametrize("value", ["abc!", "abc", "ab=c", "YQ==YQ==", "-_-_", "é"])
def test_base64_is_strict(value):
    _refused(ar.read_post, value, None, code="saml_malformed")


@pytest.mark.parametrize("value", [None, ""])
def test_post_without_a_request_is_refused(value):
    _refused(ar.read_post, value, "rs", code="saml_malformed")


def test_post_reads_its_fields():
    incoming = ar.read_post(_b64(b"<x/>"), "state-1")
    assert incoming == ar.Incoming(BINDING_POST, b"<x/>", "state-1")
    assert (incoming.sig_alg, incoming.signature, incoming.signed_query) == (None, None, None)
    _refused(ar.read_post, _b64(b"<x/>"), "r" * 1025, code="saml_relay_state_too_long")


# ---- inflate ----------------------------------------------------------------------------------


def test_inflate_default_limit_is_max_xml():
    exact = _deflate(b"x" * ar.MAX_XML)
    assert ar.inflate(exact) == b"x" * ar.MAX_XML
    _refused(ar.inflate, _deflate(b"x" * (ar.MAX_XML + 1)), code="saml_inflate_limit", status=413)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_inflate_at_and_beyond_the_limit(level):
    for size in (1, 99, 100):
        assert ar.inflate(_deflate(b"y" * size, level), limit=100) == b"y" * size
    for size in (101, 102, 5000):
        _refused(
            ar.inflate,
            _deflate(b"y" * size, level),
            limit=100,
            code="saml_inflate_limit",
            status=413,
        )


def test_inflate_stops_a_deflate_bomb_at_the_cap():
    """64 MiB of zeros deflate to 64 KiB; only the cap's worth is ever inflated."""
    bomb = _deflate(bytes(64 * 1024 * 1024))
    tracemalloc.start()
    try:
        _refused(ar.inflate, bomb, limit=1000, code="saml_inflate_limit", status=413)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


def test_inflate_refuses_what_is_not_a_whole_deflate_stream():
    whole = _deflate(b"hello " * 50)
    assert ar.inflate(whole) == b"hello " * 50
    _refused(ar.inflate, whole[: len(whole) // 2], code="saml_malformed")
    _refused(ar.inflate, b"", code="saml_malformed")
    _refused(ar.inflate, b"\xff\xff\xff\xff", code="saml_malformed")
    _refused(ar.inflate, zlib.compress(b"zlib header, not raw"), code="saml_malformed")


# ---- RelayState -------------------------------------------------------------------------------


def test_relay_state_limit_counts_bytes():
    assert ar.check_relay_state(None) is None
    assert ar.check_relay_state("") == ""
    assert ar.check_relay_state("r" * 1024) == "r" * 1024
    _refused(ar.check_relay_state, "r" * 1025, code="saml_relay_state_too_long")
    assert ar.check_relay_state("é" * 512) == "é" * 512  # 1,024 bytes
    _refused(ar.check_relay_state, "é" * 512 + "r", code="saml_relay_state_too_long")
    # A lone surrogate counts as its three UTF-8 bytes and is not an error.
    assert ar.check_relay_state("\ud800" * 341 + "r") == "\ud800" * 341 + "r"  # 1,024
    _refused(ar.check_relay_state, "\ud800" * 342, code="saml_relay_state_too_long")


# ---- read_redirect ----------------------------------------------------------------------------


def test_redirect_reads_an_unsigned_request():
    xml = _xml(request_id="_redirect-1")
    incoming = ar.read_redirect(_redirect(xml, "https://app.test/?a=1&b=2"))
    assert incoming.binding == BINDING_REDIRECT
    assert incoming.xml == xml
    assert incoming.relay_state == "https://app.test/?a=1&b=2"
    assert (incoming.sig_alg, incoming.signature, incoming.signed_query) == (None, None, None)
    assert ar.read_redirect(_redirect(xml)).relay_state is None


def test_redirect_query_size_limit_is_exact():
    limit = ar.MAX_ENCODED * 3 + 4 * ar.MAX_RELAY_STATE
    xml = _xml()
    base = _redirect(xml) + b"&pad="
    at_limit = base + b"p" * (limit - len(base))
    assert len(at_limit) == limit
    assert ar.read_redirect(at_limit).xml == xml
    _refused(ar.read_redirect, at_limit + b"p", code="saml_too_large", status=413)


def test_redirect_saml_request_limit_is_exact():
    # MAX_ENCODED characters pass the size check and fail only as DEFLATE; one more is too large.
    _refused(ar.read_redirect, b"SAMLRequest=" + b"A" * ar.MAX_ENCODED, code="saml_malformed")
    _refused(
        ar.read_redirect,
        b"SAMLRequest=" + b"A" * (ar.MAX_ENCODED + 1),
        code="saml_too_large",
        status=413,
    )


def test_redirect_skips_empty_parts_and_unknown_names():
    xml = _xml()
    query = b"&&x=1&x=2&" + _redirect(xml, "rs") + b"&\xff\xfe=junk&"
    incoming = ar.read_redirect(query)
    assert (incoming.xml, incoming.relay_state) == (xml, "rs")


def test_redirect_splits_each_parameter_at_its_first_equals_sign():
    xml = next(x for x in (_xml(subject="s" * i) for i in range(1, 40)) if len(_deflate(x)) % 3)
    encoded = _b64(_deflate(xml))
    assert encoded.endswith("=")  # unencoded padding stays part of the value
    raw = b"SAMLRequest=" + encoded.replace("+", "%2B").replace("/", "%2F").encode()
    assert ar.read_redirect(raw).xml == xml
    assert ar.read_redirect(raw + b"&RelayState=a=b").relay_state == "a=b"


@pytest.mark.parametrize("name", ["SAMLRequest", "RelayState", "SigAlg", "Signature"])
def test_redirect_refuses_a_parameter_given_twice(name):
    query = _redirect(_xml(), "rs", sign=True) + f"&{name}=again".encode()
    err = _refused(ar.read_redirect, query, code="saml_malformed")
    assert str(err) == f"saml_malformed: {name} appears twice"


def test_redirect_without_saml_request_is_refused():
    _refused(ar.read_redirect, b"RelayState=x", code="saml_malformed")
    _refused(ar.read_redirect, b"", code="saml_malformed")
    _refused(ar.read_redirect, b"samlrequest=abc", code="saml_malformed")


def test_redirect_empty_saml_request_is_malformed():
    _refused(ar.read_redirect, b"SAMLRequest=", code="saml_malformed")
    _refused(ar.read_redirect, b"SAMLRequest", code="saml_malformed")


def test_redirect_url_decoding():
    xml = _xml()
    encoded = _b64(_deflate(xml))
    plus = b"SAMLRequest=" + quote_plus(encoded).encode() + b"&RelayState=a+b%2Bc%26d%C3%A9"
    incoming = ar.read_redirect(plus)
    assert incoming.xml == xml and incoming.relay_state == "a b+c&dé"


@pytest.mark.parametrize(
    "relay", [b"RelayState=%FF", b"RelayState=\xc3\xa9", b"RelayState=%C3", b"RelayState=%ED%A0%80"]
)
def test_redirect_parameters_must_be_url_encoded_utf8(relay):
    err = _refused(ar.read_redirect, _redirect(_xml()) + b"&" + relay, code="saml_malformed")
    assert str(err) == "saml_malformed: RelayState is not URL-encoded UTF-8"


def test_redirect_relay_state_is_limited():
    _refused(ar.read_redirect, _redirect(_xml(), "r" * 1025), code="saml_relay_state_too_long")
    assert ar.read_redirect(_redirect(_xml(), "r" * 1024)).relay_state == "r" * 1024


def test_redirect_signed_query_is_the_exact_bytes_in_canonical_order():
    xml = _xml()
    req = quote(_b64(_deflate(xml)), safe="").encode()
    relay = b"a%20b+c"  # two spellings of a space, kept as received
    alg = quote(RSA_SHA256, safe="").encode()
    signature = _b64(b"\x01" * 256)
    for query in (
        b"SAMLRequest=" + req + b"&RelayState=" + relay + b"&SigAlg=" + alg,
        b"SigAlg=" + alg + b"&RelayState=" + relay + b"&SAMLRequest=" + req,
    ):
        incoming = ar.read_redirect(query + b"&Signature=" + quote(signature, safe="").encode())
        assert incoming.signed_query == (
            b"SAMLRequest=" + req + b"&RelayState=" + relay + b"&SigAlg=" + alg
        )
        assert incoming.sig_alg == RSA_SHA256
        assert incoming.signature == b"\x01" * 256
        assert incoming.relay_state == "a b c"
    without_relay = ar.read_redirect(
        b"SAMLRequest=" + req + b"&SigAlg=" + alg + b"&Signature=" + signature.encode()
    )
    assert without_relay.signed_query == b"SAMLRequest=" + req + b"&SigAlg=" + alg
    assert without_relay.relay_state is None


def test_redirect_signature_needs_sig_alg():
    base = _redirect(_xml()) + b"&Signature=" + quote(_b64(b"s" * 64), safe="").encode()
    err = _refused(ar.read_redirect, base, code="saml_signature_invalid")
    assert str(err) == "saml_signature_invalid: Signature without SigAlg"
    _refused(ar.read_redirect, base + b"&SigAlg=", code="saml_signature_invalid")


def test_redirect_signature_size_limit_is_exact():
    base = _redirect(_xml()) + b"&SigAlg=x&Signature="
    at_limit = ar.read_redirect(base + b"A" * 8192)
    assert at_limit.signature == bytes(6144)
    _refused(ar.read_redirect, base + b"A" * 8193, code="saml_too_large", status=413)
    _refused(ar.read_redirect, base + b"abc!", code="saml_malformed")
    empty = ar.read_redirect(base)
    assert empty.signature == b"" and empty.sig_alg == "x"


# ---- 2. parsing -------------------------------------------------------------------------------


def test_parse_reads_every_field():
    xml = _xml(
        request_id="_fields-1",
        acs_url=ACS_2,
        nameid_format=NAMEID_FORMATS["persistent"],
        subject="  bob@example.com  ",
        extra_attrs=' IsPassive=" TRUE " ForceAuthn="1" AssertionConsumerServiceIndex="1"',
    )
    req = ar.parse(xml)
    assert req.id == "_fields-1"
    assert req.issuer == SP
    assert req.issue_instant == NOW and req.issue_instant.tzinfo is dt.UTC
    assert req.destination == SSO
    assert req.acs_url == ACS_2
    assert req.acs_index == 1
    assert req.protocol_binding == BINDING_POST
    assert req.nameid_format == NAMEID_FORMATS["persistent"]
    assert req.is_passive is True and req.force_authn is True
    assert req.subject == "bob@example.com"
    assert req.root.get("ID") == "_fields-1"
    assert req.requested_authn_context is None


def test_parse_defaults():
    req = ar.parse(_xml(destination=None))
    assert req.destination is None and req.acs_url is None and req.acs_index is None
    assert req.protocol_binding is None and req.nameid_format is None and req.subject is None
    assert req.is_passive is False and req.force_authn is False


def test_parse_reads_the_requested_authn_context():
    xml = _xml().replace(
        b"</samlp:AuthnRequest>",
        f'<samlp:RequestedAuthnContext Comparison="minimum"><saml:AuthnContextClassRef>'
        f"{AC_PASSWORD}</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>"
        "</samlp:AuthnRequest>".encode(),
    )
    requested = ar.parse(xml).requested_authn_context
    assert requested.comparison == "minimum" and requested.class_refs == (AC_PASSWORD,)


def test_a_policy_without_format_reads_none():
    xml = _xml().replace(b"</samlp:AuthnRequest>", b"<samlp:NameIDPolicy/></samlp:AuthnRequest>")
    assert ar.parse(xml).nameid_format is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("1", True),
        ("True", True),
        (" true\n", True),
        ("false", False),
        ("0", False),
        ("", False),
        ("yes", False),
        ("t", False),
        (None, False),
    ],
)
def test_bool(value, expected):
    assert ar._bool(value) is expected


def test_parse_size_limit_is_exact():
    head = _xml()[: -len(b"</samlp:AuthnRequest>")]
    tail = b"</samlp:AuthnRequest>"
    pad = ar.MAX_XML - len(head) - len(tail)
    exact = head + b" " * pad + tail
    assert len(exact) == ar.MAX_XML
    assert ar.parse(exact).issuer == SP
    _refused(ar.parse, head + b" " * (pad + 1) + tail, code="saml_too_large", status=413)


@pytest.mark.parametrize(
    "xml",
    [
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"'
        b' ID="_r" Version="2.0"/>',
        b'<AuthnRequest ID="_r" Version="2.0"/>',
        b'<saml:AuthnRequest xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"'
        b' ID="_r" Version="2.0"/>',
    ],
)
def test_parse_refuses_another_element(xml):
    err = _refused(ar.parse, xml, code="saml_malformed")
    assert str(err) == "saml_malformed: not a samlp:AuthnRequest"


@pytest.mark.parametrize("version", ["1.1", "2", "2.0 ", "", None])
def test_parse_requires_version_2(version):
    xml = _xml().replace(
        b' Version="2.0"', b"" if version is None else f' Version="{version}"'.encode()
    )
    err = _refused(ar.parse, xml, code="saml_malformed")
    assert str(err) == "saml_malformed: Version must be 2.0"


@pytest.mark.parametrize(
    "request_id",
    ["", "1abc", "-abc", ".abc", "a b", "${jndi:x}", "a<b", "_" + "x" * 256, "_x\n", "é"],
)
def test_parse_refuses_a_bad_id(request_id):
    xml = _xml(request_id="_placeholder").replace(
        b'ID="_placeholder"', f'ID="{request_id}"'.encode().replace(b"<", b"&lt;")
    )
    _refused(ar.parse, xml, code="saml_bad_id")


def test_parse_refuses_a_missing_id():
    xml = _xml(request_id="_placeholder").replace(b' ID="_placeholder"', b"")
    _refused(ar.parse, xml, code="saml_bad_id")


@pytest.mark.parametrize("request_id", ["a", "_", "A.b-c_9", "_" + "x" * 255])
def test_parse_accepts_a_good_id(request_id):
    assert ar.parse(_xml(request_id=request_id)).id == request_id


def test_parse_issuer_rules():
    assert ar.parse(_xml(issuer="i" * 1024)).issuer == "i" * 1024
    assert ar.parse(_xml(issuer=" \n" + "i" * 1024 + " ")).issuer == "i" * 1024
    err = _refused(ar.parse, _xml(issuer="i" * 1025), code="saml_malformed")
    assert str(err) == "saml_malformed: Issuer is too long"
    for empty in (b"<saml:Issuer></saml:Issuer>", b"<saml:Issuer>  </saml:Issuer>", b""):
        xml = _xml().replace(f"<saml:Issuer>{SP}</saml:Issuer>".encode(), empty)
        err = _refused(ar.parse, xml, code="saml_malformed")
        assert str(err) == "saml_malformed: no Issuer"


def test_parse_subject_rules():
    assert ar.parse(_xml(subject="s" * 256)).subject == "s" * 256
    err = _refused(ar.parse, _xml(subject="s" * 257), code="saml_malformed")
    assert str(err) == "saml_malformed: Subject NameID is too long"
    xml = _xml().replace(
        b"</saml:Issuer>",
        b"</saml:Issuer><saml:Subject><saml:NameID> </saml:NameID></saml:Subject>",
    )
    assert ar.parse(xml).subject is None


@pytest.mark.parametrize(("text", "index"), [("0", 0), ("7", 7), ("00001", 1), ("99999", 99999)])
def test_parse_acs_index(text, index):
    xml = _xml(extra_attrs=f' AssertionConsumerServiceIndex="{text}"')
    assert ar.parse(xml).acs_index == index


@pytest.mark.parametrize("text", ["", "100000", "-1", "+1", "1.0", " 1", "0x1", "\u0661", "\u00b2"])
def test_parse_refuses_a_bad_acs_index(text):
    xml = _xml(extra_attrs=f' AssertionConsumerServiceIndex="{text}"')
    err = _refused(ar.parse, xml, code="saml_malformed")
    assert str(err) == "saml_malformed: AssertionConsumerServiceIndex is not an index"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T09:00:00Z", NOW),
        ("2026-12-06T09:00:00+00:00", NOW),
        ("2026-12-06T09:00:00-00:00", NOW),
        ("2026-12-06T09:00:00.5Z", NOW + dt.timedelta(milliseconds=500)),
        ("2026-12-06T09:00:00.123456789Z", NOW + dt.timedelta(microseconds=123456)),
    ],
)
def test_instant_accepts_utc(text, expected):
    got = ar._instant(text, "IssueInstant")
    assert got == expected and got.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "2026-12-06T09:00:00",
        "2026-12-06T09:00:00+01:00",
        "2026-12-06 09:00:00Z",
        "2026-12-06T09:00:00.1234567890Z",
        "2026-12-06T09:00:00.Z",
        "2026-12-06T09:00:00Zjunk",
        "26-12-06T09:00:00Z",
    ],
)
def test_instant_refuses_what_is_not_utc_xsd_datetime(text):
    err = _refused(ar._instant, text, "IssueInstant", code="saml_malformed")
    assert str(err) == "saml_malformed: IssueInstant is not a UTC xsd:dateTime"


@pytest.mark.parametrize(
    "text", ["2026-13-06T09:00:00Z", "2026-02-30T09:00:00Z", "2026-12-06T25:00:00Z"]
)
def test_instant_refuses_an_impossible_date(text):
    err = _refused(ar._instant, text, "When", code="saml_malformed")
    assert str(err) == "saml_malformed: When is not a valid date"


def test_instant_is_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        got = ar._instant("2026-12-06T09:00:00Z", "IssueInstant")
        assert got.tzinfo is dt.UTC and got.hour == 9
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_refuses_a_missing_issue_instant():
    xml = _xml()
    start = xml.index(b' IssueInstant="')
    end = xml.index(b'"', start + len(b' IssueInstant="')) + 1
    _refused(ar.parse, xml[:start] + xml[end:], code="saml_malformed")


# ---- 3. check ---------------------------------------------------------------------------------


def test_check_accepts_an_unsigned_post_request():
    incoming = _post(_xml(request_id="_ok-1"), "rs-1")
    accepted = _check(incoming)
    assert accepted.request.id == "_ok-1"
    assert accepted.sp_id == "sp-unit" and accepted.sp_entity_id == SP
    assert accepted.sp_name == "Unit SP"
    assert accepted.acs_url == ACS
    assert accepted.binding == BINDING_POST and accepted.relay_state == "rs-1"
    assert accepted.signed is False and accepted.identity_broker is False
    assert accepted.sp_settings == sp_view.snapshot(_sp())


def test_check_unknown_and_disabled_sp():
    incoming = _post(_xml())
    request = ar.parse(incoming.xml)
    _refused(
        ar.check, incoming, request, None, sso_url=SSO, now=NOW, code="saml_unknown_sp", status=404
    )
    _refused(
        ar.check,
        incoming,
        request,
        _sp(enabled=False),
        sso_url=SSO,
        now=NOW,
        code="saml_sp_disabled",
        status=403,
    )


def test_check_verifies_an_enveloped_signature_on_post():
    accepted = _check(_post(_sign_enveloped(_xml())))
    assert accepted.signed is True
    other_key, _ = cached_key_pair("authn-unit-other")
    _refused(_check, _post(_sign_enveloped(_xml(), other_key)), code="saml_signature_invalid")


def test_check_ignores_an_enveloped_signature_on_redirect():
    """On the Redirect binding only the detached signature counts: an enveloped one
    (here made with a stranger's key) is neither verified nor trusted."""
    other_key, _ = cached_key_pair("authn-unit-other")
    accepted = _check(ar.read_redirect(_redirect(_sign_enveloped(_xml(), other_key))))
    assert accepted.signed is False
    with pytest.raises(SamlError) as refused:
        _check(
            ar.read_redirect(_redirect(_sign_enveloped(_xml()))), _sp(require_signed_requests=True)
        )
    assert refused.value.code == "saml_signature_required"


def test_check_verifies_a_detached_signature_on_redirect():
    incoming = ar.read_redirect(_redirect(_xml(), "rs", sign=True))
    accepted = _check(incoming)
    assert accepted.signed is True and accepted.binding == BINDING_REDIRECT
    assert accepted.relay_state == "rs"
    tampered = ar.Incoming(
        incoming.binding,
        incoming.xml,
        incoming.relay_state,
        incoming.sig_alg,
        incoming.signature,
        incoming.signed_query + b"x",
    )
    _refused(_check, tampered, code="saml_signature_invalid")
    _refused(_check, incoming, _sp(signing_certs=[]), code="saml_signature_invalid")
    _refused(_check, incoming, _sp(signing_certs=None), code="saml_signature_invalid")


def test_check_detached_signature_needs_its_signed_bytes_and_algorithm():
    """Only read_redirect makes these, always together; made by hand, a missing part is
    verified as empty, never as something else."""
    xml = _xml()
    for signed_query, sig_alg in ((None, RSA_SHA256), (b"x", None)):
        forged = ar.Incoming(
            BINDING_REDIRECT, xml, None, sig_alg, _sign_detached(b"XXXX"), signed_query
        )
        _refused(_check, forged, code="saml_signature_invalid")
    assert _check(
        ar.Incoming(BINDING_REDIRECT, xml, None, RSA_SHA256, _sign_detached(b"q"), b"q")
    ).signed


def test_check_ignores_a_detached_signature_on_post():
    xml = _xml()
    incoming = ar.Incoming(BINDING_POST, xml, None, RSA_SHA256, b"junk", b"q")
    assert _check(incoming).signed is False


@pytest.mark.parametrize(
    ("overrides", "must_sign"),
    [
        ({}, False),
        ({"require_signed_requests": True}, True),
        ({"identity_broker": True}, True),
        ({"require_signed_requests": True, "identity_broker": True}, True),
    ],
)
def test_check_signature_requirement(overrides, must_sign):
    sp = _sp(**overrides)
    if must_sign:
        err = _refused(_check, _post(_xml()), sp, code="saml_signature_required", status=403)
        assert str(err) == "saml_signature_required: this SP must sign its requests"
    else:
        assert _check(_post(_xml()), sp).signed is False
    assert _check(_post(_sign_enveloped(_xml())), sp).signed is True


def test_check_destination():
    assert _check(_post(_xml(destination=None))).request.destination is None
    err = _refused(_check, _post(_xml(destination=SSO + "/")), code="saml_wrong_destination")
    assert str(err) == "saml_wrong_destination: Destination is not this endpoint"
    _refused(
        _check,
        _post(_sign_enveloped(_xml(destination="http://other.idp/sso"))),
        code="saml_wrong_destination",
    )
    err = _refused(
        _check, _post(_sign_enveloped(_xml(destination=None))), code="saml_wrong_destination"
    )
    assert str(err) == "saml_wrong_destination: a signed request must carry its Destination"
    signed = ar.read_redirect(_redirect(_xml(destination=None), sign=True))
    _refused(_check, signed, code="saml_wrong_destination")


def test_check_freshness_window_is_exact():
    def at(when: dt.datetime) -> ar.Incoming:
        return _post(_xml(issue_instant=when))

    oldest, newest = NOW - ar.MAX_AGE, NOW + ar.MAX_FUTURE
    assert _check(at(oldest)).request.issue_instant == oldest
    assert _check(at(newest)).request.issue_instant == newest
    err = _refused(_check, at(oldest - dt.timedelta(seconds=1)), code="saml_expired_request")
    assert str(err) == "saml_expired_request: IssueInstant is outside the accepted window"
    _refused(_check, at(newest + dt.timedelta(seconds=1)), code="saml_expired_request")
    assert ar.MAX_AGE == dt.timedelta(minutes=8) and ar.MAX_FUTURE == dt.timedelta(minutes=3)


def test_check_without_now_reads_the_clock():
    current = dt.datetime.now(dt.UTC).replace(microsecond=0)
    incoming = _post(_xml(issue_instant=current))
    request = ar.parse(incoming.xml)
    assert ar.check(incoming, request, _sp(), sso_url=SSO).request.issue_instant == current
    stale = _post(_xml(issue_instant=current - ar.MAX_AGE - dt.timedelta(seconds=5)))
    _refused(ar.check, stale, ar.parse(stale.xml), _sp(), sso_url=SSO, code="saml_expired_request")


def test_check_passes_the_acs_url_index_and_binding_on():
    assert _check(_post(_xml(acs_url=ACS_2))).acs_url == ACS_2
    by_index = _post(_xml(extra_attrs=' AssertionConsumerServiceIndex="1"'))
    assert _check(by_index).acs_url == ACS_2
    _refused(_check, _post(_xml(acs_url="http://evil.test/acs")), code="saml_acs_mismatch")
    artifact = _post(_xml(extra_attrs=f' ProtocolBinding="{ARTIFACT}"'))
    _refused(_check, artifact, code="saml_unsupported_binding")


def test_check_broker_flag():
    broker = _sp(identity_broker=True)
    accepted = _check(_post(_sign_enveloped(_xml(subject="alice@example.com"))), broker)
    assert accepted.identity_broker is True and accepted.signed is True


# ---- Accepted --------------------------------------------------------------------------------


def _accepted(xml: bytes | None = None, *, signed: bool = False, **sp_overrides) -> ar.Accepted:
    xml = _xml() if xml is None else xml
    return _check(_post(_sign_enveloped(xml) if signed else xml, "rs"), _sp(**sp_overrides))


def _with_context(comparison: str, *classes: str) -> bytes:
    refs = "".join(f"<saml:AuthnContextClassRef>{c}</saml:AuthnContextClassRef>" for c in classes)
    return _xml().replace(
        b"</samlp:AuthnRequest>",
        f'<samlp:RequestedAuthnContext Comparison="{comparison}">{refs}'
        "</samlp:RequestedAuthnContext></samlp:AuthnRequest>".encode(),
    )


def test_authn_context_class():
    assert _accepted().authn_context_class() == AUTHN_CONTEXT_DEVICE_BOUND
    assert _accepted(_with_context("exact", AC_UNSPECIFIED)).authn_context_class() == AC_UNSPECIFIED
    password = _with_context("exact", AC_PASSWORD)
    assert _accepted(password).authn_context_class() is None
    assert _accepted(password, requested_authn_context="strict").authn_context_class() is None
    assert _accepted(password, requested_authn_context=None).authn_context_class() is None
    assert (
        _accepted(password, requested_authn_context="lenient").authn_context_class()
        == AUTHN_CONTEXT_DEVICE_BOUND
    )


def test_context_of_an_ordinary_request():
    accepted = _accepted(
        _xml(request_id="_ctx-1", subject="bob@example.com", nameid_format=NAMEID_UNSPECIFIED)
    )
    assert accepted.context() == {
        "sp_entity_id": SP,
        "sp_name": "Unit SP",
        "acs_url": ACS,
        "binding": BINDING_POST,
        "request_id": "_ctx-1",
        "relay_state": "rs",
        "nameid_format": NAMEID_UNSPECIFIED,
        "broker_subject": None,  # only a broker names the user
        "tofu_subject": None,
        "sp": sp_view.snapshot(_sp()),
        "authn_context_class": AUTHN_CONTEXT_DEVICE_BOUND,
    }


def test_context_of_a_broker_request():
    signed = _accepted(_xml(subject="alice@example.com"), signed=True, identity_broker=True)
    assert signed.context()["broker_subject"] == "alice@example.com"
    assert signed.context()["tofu_subject"] == "alice@example.com"
    # An unsigned broker request never gets this far (check refuses it); made by hand, its
    # subject is still not an identity proof.
    unsigned = ar.Accepted(**{**signed.__dict__, "signed": False})
    assert unsigned.context()["broker_subject"] == "alice@example.com"
    assert unsigned.context()["tofu_subject"] is None


def test_context_falls_back_to_the_device_bound_class():
    accepted = _accepted(_with_context("exact", AC_PASSWORD))
    assert accepted.authn_context_class() is None
    assert accepted.context()["authn_context_class"] == AUTHN_CONTEXT_DEVICE_BOUND
    unspecified = _accepted(_with_context("exact", AC_UNSPECIFIED))
    assert unspecified.context()["authn_context_class"] == AC_UNSPECIFIED


# ---- policy_check -----------------------------------------------------------------------------


def _policy_refused(accepted: ar.Accepted, code: str, saml_status: tuple[str, ...]) -> SamlError:
    with pytest.raises(SamlError) as refused:
        ar.policy_check(accepted)
    assert refused.value.code == code and refused.value.saml_status == saml_status
    assert refused.value.status == 400
    return refused.value


def test_policy_accepts_an_ordinary_request():
    assert ar.policy_check(_accepted()) is None


def test_policy_refuses_is_passive():
    for value in ("true", "1"):
        accepted = _accepted(_xml(extra_attrs=f' IsPassive="{value}"'))
        err = _policy_refused(accepted, "saml_no_passive", (STATUS_RESPONDER, STATUS_NO_PASSIVE))
        assert str(err) == (
            "saml_no_passive: IsPassive is not possible: the device check needs the login page"
        )
    assert ar.policy_check(_accepted(_xml(extra_attrs=' IsPassive="false"'))) is None


@pytest.mark.parametrize("configured", ["emailAddress", "persistent", "transient", "unspecified"])
def test_policy_nameid_format(configured):
    for fmt in (None, NAMEID_UNSPECIFIED, NAMEID_FORMATS[configured]):
        ar.policy_check(_accepted(_xml(nameid_format=fmt), nameid_format=configured))
    for other in NAMEID_FORMATS.values():
        if other in (NAMEID_UNSPECIFIED, NAMEID_FORMATS[configured]):
            continue
        err = _policy_refused(
            _accepted(_xml(nameid_format=other), nameid_format=configured),
            "saml_nameid_policy",
            (STATUS_REQUESTER, STATUS_INVALID_NAMEID_POLICY),
        )
        assert str(err) == f"saml_nameid_policy: this SP is set up for {configured} NameIDs"
    _policy_refused(
        _accepted(_xml(nameid_format="urn:x:other"), nameid_format=configured),
        "saml_nameid_policy",
        (STATUS_REQUESTER, STATUS_INVALID_NAMEID_POLICY),
    )


def test_policy_broker_must_name_the_subject():
    err = _policy_refused(
        _accepted(_xml(), signed=True, identity_broker=True),
        "saml_broker_subject_missing",
        (STATUS_REQUESTER, STATUS_REQUEST_DENIED),
    )
    assert str(err) == (
        "saml_broker_subject_missing: an identity broker must name the user in Subject/NameID"
    )
    ar.policy_check(_accepted(_xml(subject="alice@example.com"), signed=True, identity_broker=True))
    ar.policy_check(_accepted(_xml()))  # an ordinary SP need not


def test_policy_refuses_an_authn_context_it_cannot_satisfy():
    err = _policy_refused(
        _accepted(_with_context("exact", AC_PASSWORD)),
        "saml_no_authn_context",
        (STATUS_RESPONDER, STATUS_NO_AUTHN_CONTEXT),
    )
    assert err.audit_details == {
        "requested_authn_context": {"comparison": "exact", "classes": [AC_PASSWORD]}
    }
    assert str(err) == (
        "saml_no_authn_context: none of the classes devicetrust asserts satisfies the "
        "RequestedAuthnContext"
    )
    ar.policy_check(
        _accepted(_with_context("exact", AC_PASSWORD), requested_authn_context="lenient")
    )
    ar.policy_check(_accepted(_with_context("minimum", AC_PASSWORD)))


def test_policy_checks_in_order():
    """IsPassive first, then the NameID format, then the broker's subject, then the context."""
    everything = _xml(nameid_format="urn:x:other", extra_attrs=' IsPassive="true"')
    with_context = everything.replace(
        b"</samlp:AuthnRequest>",
        f"<samlp:RequestedAuthnContext><saml:AuthnContextClassRef>{AC_PASSWORD}"
        "</saml:AuthnContextClassRef></samlp:RequestedAuthnContext></samlp:AuthnRequest>".encode(),
    )
    accepted = _accepted(with_context, signed=True, identity_broker=True)
    with pytest.raises(SamlError) as refused:
        ar.policy_check(accepted)
    assert refused.value.code == "saml_no_passive"


# ---- seen_until -------------------------------------------------------------------------------


def test_seen_until():
    window = ar.MAX_AGE + ar.MAX_FUTURE
    accepted = _accepted()  # IssueInstant NOW
    assert ar.seen_until(accepted, NOW) == NOW + window
    later = NOW + dt.timedelta(minutes=2)
    assert ar.seen_until(accepted, later) == later + window
    earlier = NOW - dt.timedelta(minutes=2)
    assert ar.seen_until(accepted, earlier) == NOW + window  # the IssueInstant is later
    before = dt.datetime.now(dt.UTC)
    got = ar.seen_until(accepted)  # the clock, which is after NOW's IssueInstant here or not
    assert max(before, NOW) + window <= got <= max(dt.datetime.now(dt.UTC), NOW) + window
