"""The SP registry in-process: what it takes from metadata, which settings it refuses and why,
and what add, update, remove and get do to the table and the audit log.

Written for the mutation run over ``idp_service/saml/registry.py``: most of its callers are
the admin CLI and API, whose tests run the service in a child process where a mutation run
cannot credit them. Refusals are checked by code *and* message: the message is what the CLI
and the admin API show the administrator.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from sqlalchemy import select

from idp_service.platform.db import Database
from idp_service.platform.models import AuditEvent
from idp_service.saml import registry
from idp_service.saml.protocol.constants import BINDING_POST, BINDING_REDIRECT
from idp_service.saml.tables import ServiceProvider
from tests.saml_support import NS, cached_key_pair, sp_metadata

MD = NS["md"]
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
ORG = (
    "<md:Organization><md:OrganizationDisplayName>{}</md:OrganizationDisplayName></md:Organization>"
)
DS = NS["ds"]


def _cert() -> tuple[str, str]:
    """A certificate as PEM and as the base64 DER text metadata carries."""
    _, pem = cached_key_pair("registry-unit")
    der = "".join(pem.strip().splitlines()[1:-1])
    return pem, der


def _md(
    body: str,
    *,
    entity_id: str = "https://sp.test/m",
    sp_attrs: str = "",
    extra: str = "",
) -> bytes:
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="{entity_id}">'
        f'<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"'
        f" {sp_attrs}>{body}</md:SPSSODescriptor>{extra}</md:EntityDescriptor>"
    ).encode()


def _acs(location: str, index: object = None, binding: str = BINDING_POST, default=None) -> str:
    idx = "" if index is None else f' index="{index}"'
    dflt = "" if default is None else f' isDefault="{default}"'
    return f'<md:AssertionConsumerService Binding="{binding}" Location="{location}"{idx}{dflt}/>'


def _key(der: str, use: str | None = None) -> str:
    u = "" if use is None else f' use="{use}"'
    return (
        f"<md:KeyDescriptor{u}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{der}"
        "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
    )


def _refused(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(registry.RegistryError) as err:
        fn(*args, **kwargs)
    assert str(err.value) == err.value.message
    return err.value.code, err.value.message


ACS = _acs("https://sp.test/acs", 0)


# ---- parse_metadata ---------------------------------------------------------------------------


def test_the_parts_taken_from_metadata():
    pem, der = _cert()
    md = registry.parse_metadata(
        _md(
            _key(der, "signing")
            + f"<md:NameIDFormat> {PERSISTENT} </md:NameIDFormat>"
            + "<md:NameIDFormat>urn:example:unknown</md:NameIDFormat><md:NameIDFormat/>"
            + _acs(" https://sp.test/a ", 3, default="true")
            + _acs(
                "https://sp.test/art",
                4,
                binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
            )
            + _acs("https://sp.test/b")
            + _acs("http://sp.test/c", 9, default=" FALSE "),
            entity_id=" https://sp.test/m ",
            sp_attrs='AuthnRequestsSigned="TRUE"',
            extra=(
                "<md:Organization><md:OrganizationName>x</md:OrganizationName>"
                "<md:OrganizationDisplayName> Test SP </md:OrganizationDisplayName>"
                "</md:Organization>"
            ),
        )
    )
    assert md.entity_id == "https://sp.test/m"
    assert md.acs == [
        {"binding": BINDING_POST, "location": "https://sp.test/a", "index": 3, "is_default": True},
        {"binding": BINDING_POST, "location": "https://sp.test/b", "index": 2, "is_default": None},
        {"binding": BINDING_POST, "location": "http://sp.test/c", "index": 9, "is_default": False},
    ]
    assert md.signing_certs == [
        x509.load_pem_x509_certificate(pem.encode())
        .public_bytes(
            __import__(
                "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]
            ).Encoding.PEM
        )
        .decode()
    ]
    assert md.encryption_certs == []
    assert md.nameid_formats == ["persistent"]
    assert md.authn_requests_signed is True
    assert md.name == "Test SP"


@pytest.mark.parametrize(
    ("value", "expect"), [("true", True), ("1", True), ("0", False), ("no", False)]
)
def test_is_default_and_requests_signed_read_true_and_1(value, expect):
    md = registry.parse_metadata(
        _md(_acs("https://sp.test/a", 0, default=value), sp_attrs=f'AuthnRequestsSigned="{value}"')
    )
    assert md.acs[0]["is_default"] is expect
    assert md.authn_requests_signed is expect


def test_defaults_when_metadata_says_little():
    md = registry.parse_metadata(_md(ACS))
    assert md.authn_requests_signed is False
    assert md.name is None
    assert md.nameid_formats == [] and md.signing_certs == [] and md.encryption_certs == []
    empty_name = _md(
        ACS,
        extra=ORG.format(" "),
    )
    assert registry.parse_metadata(empty_name).name is None


def test_certificates_by_use_once_each():
    pem, der = _cert()
    spaced = der[:20] + "\n  " + der[20:]
    md = registry.parse_metadata(
        _md(_key(der) + _key(spaced, "signing") + _key(der, "encryption") + ACS)
    )
    assert len(md.signing_certs) == 1 and len(md.encryption_certs) == 1
    assert md.signing_certs == md.encryption_certs
    assert md.signing_certs[0].startswith("-----BEGIN CERTIFICATE-----")
    only_enc = registry.parse_metadata(_md(_key(der, "encryption") + ACS))
    assert only_enc.signing_certs == [] and len(only_enc.encryption_certs) == 1
    only_sign = registry.parse_metadata(_md(_key(der, "signing") + ACS))
    assert len(only_sign.signing_certs) == 1 and only_sign.encryption_certs == []


def test_an_unreadable_certificate_is_refused():
    code, message = _refused(registry.parse_metadata, _md(_key("!!notbase64!!") + ACS))
    assert code == "metadata_invalid"
    assert message.startswith("unreadable certificate in metadata: ")
    code, message = _refused(registry.parse_metadata, _md(_key("AAAA") + ACS))
    assert code == "metadata_invalid" and message.startswith("unreadable certificate in metadata: ")


def test_aggregates_need_exactly_one_sp_or_an_entity_id():
    one = _md(ACS, entity_id="https://a.test").decode()
    two = _md(_acs("https://b.test/acs", 0), entity_id="https://b.test").decode()
    idp_only = f'<md:EntityDescriptor xmlns:md="{MD}" entityID="https://idp.test"><md:IDPSSODescriptor/></md:EntityDescriptor>'
    agg = f'<md:EntitiesDescriptor xmlns:md="{MD}">{one}{two}{idp_only}'
    agg = (agg + "</md:EntitiesDescriptor>").encode()
    assert _refused(registry.parse_metadata, agg) == (
        "metadata_invalid",
        "expected exactly one EntityDescriptor with an SPSSODescriptor"
        " (choose one with --entity-id)",
    )
    assert registry.parse_metadata(agg, "https://b.test").acs[0]["location"] == "https://b.test/acs"
    assert _refused(registry.parse_metadata, agg, "https://idp.test") == (
        "metadata_invalid",
        "expected exactly one EntityDescriptor with an SPSSODescriptor",
    )
    single = (
        f'<md:EntitiesDescriptor xmlns:md="{MD}">{one}{idp_only}</md:EntitiesDescriptor>'.encode()
    )
    assert registry.parse_metadata(single).entity_id == "https://a.test"


def test_documents_that_are_not_sp_metadata():
    assert _refused(registry.parse_metadata, b"<x/>") == (
        "metadata_invalid",
        "expected an md:EntityDescriptor",
    )
    assert _refused(registry.parse_metadata, b'<!DOCTYPE x [<!ENTITY a "b">]><x/>') == (
        "metadata_invalid",
        "metadata is not acceptable XML (saml_dtd_forbidden)",
    )
    big = b"<x>" + b" " * registry.MAX_METADATA + b"</x>"
    assert _refused(registry.parse_metadata, big) == (
        "metadata_invalid",
        "metadata is not acceptable XML (saml_too_large)",
    )


@pytest.mark.parametrize("eid", ["", "   ", "h" * 1025])
def test_the_entity_id_is_1_to_1024_characters(eid):
    assert _refused(registry.parse_metadata, _md(ACS, entity_id=eid)) == (
        "metadata_invalid",
        "the entityID is missing or too long",
    )


def test_an_entity_id_of_1024_characters():
    assert registry.parse_metadata(_md(ACS, entity_id="h" * 1024)).entity_id == "h" * 1024


def test_acs_refusals():
    assert _refused(registry.parse_metadata, _md(_acs("javascript:alert(1)", 0))) == (
        "metadata_invalid",
        "ACS Location 'javascript:alert(1)' is not an http(s) URL",
    )
    assert _refused(registry.parse_metadata, _md(_acs("https://sp.test/a", "x"))) == (
        "metadata_invalid",
        "ACS index is not an integer",
    )
    assert _refused(
        registry.parse_metadata, _md(_acs("https://sp.test/a", 0, BINDING_REDIRECT))
    ) == (
        "metadata_invalid",
        "the SP has no AssertionConsumerService with the HTTP-POST binding",
    )
    dup = _acs("https://sp.test/a", 1) + _acs("https://sp.test/b", 1)
    assert _refused(registry.parse_metadata, _md(dup)) == (
        "metadata_invalid",
        "two ACS endpoints share an index",
    )


# ---- the table: add, update, get, remove, to_json --------------------------------------------


@pytest.fixture
def session(sqlite_url):
    db = Database(sqlite_url)
    with db.session() as s:
        yield s
    db.dispose()


def _audits(session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_add_with_the_defaults(session):
    xml = _md(
        ACS
        + "<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>"
    )
    sp = registry.add(session, xml, actor="alice")
    assert len(sp.id) == 32
    assert (sp.entity_id, sp.name, sp.enabled) == ("https://sp.test/m", "https://sp.test/m", True)
    assert sp.metadata_xml == xml.decode()
    assert sp.acs == registry.parse_metadata(xml).acs
    assert sp.nameid_format == "persistent"
    assert (sp.sign_response, sp.sign_assertion, sp.encrypt_assertion) == (True, True, False)
    assert (sp.allow_idp_initiated, sp.identity_broker, sp.require_signed_requests) == (
        False,
        False,
        False,
    )
    assert (sp.signature_algorithm, sp.session_minutes, sp.requested_authn_context) == (
        "rsa-sha256",
        480,
        "strict",
    )
    assert sp.attributes == dict(registry.attrs.DEFAULT_MAPPING)
    assert registry.find(session, "https://sp.test/m") is sp
    assert registry.find(session, "https://sp.test/other") is None
    [event] = _audits(session, "saml.sp.add")
    assert (event.outcome, event.actor, event.details) == (
        "ok",
        "alice",
        {"sp": "https://sp.test/m"},
    )


def test_add_names_the_sp_from_its_metadata_or_its_entity_id(session):
    long_id = "https://sp.test/" + "x" * 300
    assert registry.add(session, _md(ACS, entity_id=long_id)).name == long_id[:256]
    named = _md(
        ACS,
        entity_id="https://n.test",
        extra="<md:Organization><md:OrganizationDisplayName>Named</md:OrganizationDisplayName></md:Organization>",
    )
    assert registry.add(session, named).name == "Named"
    signed = sp_metadata(
        "https://s.test", ["https://s.test/acs"], cert_pem=_cert()[0], authn_requests_signed=True
    )
    assert registry.add(session, signed).require_signed_requests is True
    assert (
        registry.add(
            session, _md(ACS, entity_id="https://e.test"), nameid_format="transient"
        ).nameid_format
        == "transient"
    )


def test_the_same_entity_id_twice_is_refused(session):
    registry.add(session, _md(ACS))
    assert _refused(registry.add, session, _md(ACS)) == (
        "sp_exists",
        "an SP with entityID 'https://sp.test/m' exists already",
    )


def test_settings_are_checked(session):
    xml = _md(ACS)
    cases = [
        ({"colour": "red"}, ("setting_unknown", "unknown setting 'colour'")),
        ({"enabled": 1}, ("setting_invalid", "enabled must be true or false")),
        ({"session_minutes": True}, ("setting_invalid", "session_minutes must be an integer")),
        ({"session_minutes": "5"}, ("setting_invalid", "session_minutes must be an integer")),
        ({"name": 5}, ("setting_invalid", "name must be a str")),
        ({"attributes": []}, ("setting_invalid", "attributes must be a dict")),
        (
            {"session_minutes": 0},
            ("setting_invalid", "session_minutes must be between 1 and 10080"),
        ),
        (
            {"session_minutes": 10081},
            ("setting_invalid", "session_minutes must be between 1 and 10080"),
        ),
        ({"name": ""}, ("setting_invalid", "name must be 1 to 256 characters")),
        ({"name": "   "}, ("setting_invalid", "name must be 1 to 256 characters")),
        ({"name": "n" * 257}, ("setting_invalid", "name must be 1 to 256 characters")),
    ]
    for settings, expect in cases:
        assert _refused(registry.add, session, xml, **settings) == expect, settings
    assert _refused(registry.add, session, xml, nameid_format="email") == (
        "setting_invalid",
        "nameid_format must be one of emailAddress, persistent, transient, unspecified",
    )
    assert _refused(registry.add, session, xml, signature_algorithm="md5") == (
        "setting_invalid",
        "signature_algorithm must be one of rsa-sha256, ecdsa-sha256",
    )
    code, message = _refused(registry.add, session, xml, requested_authn_context="loose")
    assert (code, message) == (
        "setting_invalid",
        "requested_authn_context must be one of strict, lenient",
    )
    code, message = _refused(registry.add, session, xml, attributes={"no_such_source": "x"})
    assert code == "setting_invalid"
    assert message.startswith("unknown attribute source 'no_such_source'; sources: ")
    assert registry.list_all(session) == []


def test_settings_at_their_limits_and_none_ignored(session):
    sp = registry.add(
        session,
        _md(ACS),
        name="n" * 256,
        session_minutes=1,
        enabled=None,
        signature_algorithm="ecdsa-sha256",
        requested_authn_context="lenient",
        sign_response=False,
        attributes={"email": "mail"},
    )
    assert (sp.name, sp.session_minutes, sp.enabled) == ("n" * 256, 1, True)
    assert sp.signature_algorithm == "ecdsa-sha256" and sp.requested_authn_context == "lenient"
    assert sp.sign_response is False and sp.attributes == {"email": "mail"}
    assert registry.update(session, sp.id, session_minutes=10080).session_minutes == 10080


def test_rows_that_cannot_work_are_refused(session):
    xml = _md(ACS)
    assert _refused(registry.add, session, xml, sign_response=False, sign_assertion=False) == (
        "setting_invalid",
        "sign the response, the assertion, or both (never neither)",
    )
    assert _refused(registry.add, session, xml, encrypt_assertion=True) == (
        "setting_invalid",
        "encrypt_assertion needs an encryption certificate in the metadata",
    )
    for flag in ("require_signed_requests", "identity_broker"):
        assert _refused(registry.add, session, xml, **{flag: True}) == (
            "setting_invalid",
            "signed requests need a signing certificate in the SP's metadata",
        ), flag
    pem, der = _cert()
    broker = registry.add(
        session, _md(_key(der) + ACS), identity_broker=True, require_signed_requests=False
    )
    assert broker.require_signed_requests is True
    assert broker.sign_response and broker.sign_assertion
    only_one = registry.update(session, broker.id, sign_response=False)
    assert only_one.sign_assertion and not only_one.sign_response
    assert registry.update(session, broker.id, encrypt_assertion=True).encrypt_assertion is True


def test_update_settings_and_metadata(session):
    sp = registry.add(session, _md(ACS))
    before = sp.updated_at
    registry.update(session, sp.id, actor="bob", session_minutes=60, enabled=False)
    assert (sp.session_minutes, sp.enabled) == (60, False)
    assert sp.updated_at is not None and (before is None or sp.updated_at >= before)
    [event] = _audits(session, "saml.sp.update")
    assert (event.outcome, event.actor) == ("ok", "bob")
    assert event.details == {"sp": "https://sp.test/m", "changed": ["enabled", "session_minutes"]}
    new_xml = _md(_acs("https://sp.test/new", 5))
    registry.update(session, "https://sp.test/m", metadata_xml=new_xml)
    assert sp.acs[0]["location"] == "https://sp.test/new" and sp.metadata_xml == new_xml.decode()
    events = _audits(session, "saml.sp.update")
    assert events[-1].details == {"sp": "https://sp.test/m", "changed": ["metadata"]}
    other = _md(_acs("https://sp.test/new", 5), entity_id="https://other.test")
    assert _refused(registry.update, session, sp.id, metadata_xml=other)[0] == "metadata_invalid"
    assert _refused(registry.update, session, sp.id, session_minutes=0)[0] == "setting_invalid"


def test_update_refuses_a_change_that_breaks_the_row_and_keeps_certs_from_metadata(session):
    pem, der = _cert()
    sp = registry.add(session, _md(_key(der, "encryption") + ACS), encrypt_assertion=True)
    assert len(sp.encryption_certs) == 1
    assert _refused(registry.update, session, sp.id, metadata_xml=_md(ACS)) == (
        "setting_invalid",
        "encrypt_assertion needs an encryption certificate in the metadata",
    )
    registry.update(
        session, sp.id, metadata_xml=_md(_key(der, "signing") + _key(der, "encryption") + ACS)
    )
    assert len(sp.signing_certs) == 1 and len(sp.encryption_certs) == 1


def test_get_by_id_entity_id_or_unique_name(session):
    a = registry.add(session, _md(ACS, entity_id="https://a.test"), name="Same")
    b = registry.add(session, _md(ACS, entity_id="https://b.test"), name="Same")
    c = registry.add(session, _md(ACS, entity_id="https://c.test"), name="Only")
    assert registry.get(session, a.id) is a
    assert registry.get(session, "https://b.test") is b
    assert registry.get(session, "Only") is c
    assert _refused(registry.get, session, "Same") == (
        "sp_ambiguous",
        "several SPs are named 'Same'; use the entityID",
    )
    assert _refused(registry.get, session, "nobody") == ("sp_unknown", "no SP 'nobody'")
    # An exact id or entityID wins over another SP that has it as its name.
    d = registry.add(session, _md(ACS, entity_id="https://d.test"), name="https://a.test")
    assert registry.get(session, "https://a.test") is a and d.name == "https://a.test"
    assert [sp.name for sp in registry.list_all(session)] == [
        "Only",
        "Same",
        "Same",
        "https://a.test",
    ]


def test_remove(session):
    sp = registry.add(session, _md(ACS))
    assert registry.remove(session, sp.id, actor="carol") == "https://sp.test/m"
    assert registry.find(session, "https://sp.test/m") is None
    assert session.get(ServiceProvider, sp.id) is None
    [event] = _audits(session, "saml.sp.remove")
    assert (event.outcome, event.actor, event.details) == (
        "ok",
        "carol",
        {"sp": "https://sp.test/m"},
    )
    assert _refused(registry.remove, session, sp.id)[0] == "sp_unknown"


def test_to_json(session):
    sp = registry.add(session, _md(ACS))
    data = registry.to_json(sp)
    assert "metadata_xml" not in data
    assert data["id"] == sp.id and data["entity_id"] == "https://sp.test/m"
    assert data["acs"] == sp.acs
    assert data["signing_certs"] == [] and data["encryption_certs"] == []
    for key in registry.SETTINGS:
        assert data[key] == getattr(sp, key), key
    assert data["created_at"] == sp.created_at.isoformat()
    assert data["updated_at"] == sp.updated_at.isoformat()
    assert registry.to_json(sp, with_metadata=True)["metadata_xml"] == sp.metadata_xml
    bare = ServiceProvider(id="x", entity_id="e", acs=[], signing_certs=[], encryption_certs=[])
    assert (
        registry.to_json(bare)["created_at"] is None
        and registry.to_json(bare)["updated_at"] is None
    )
    sp.updated_at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert registry.to_json(sp)["updated_at"] == "2026-01-02T00:00:00+00:00"


def test_the_attribute_mapping_is_stored_as_validated(session):
    # validate_mapping drops sources mapped to nothing; the row holds its result.
    sp = registry.add(session, _md(ACS), attributes={"email": "mail", "display_name": ""})
    assert sp.attributes == {"email": "mail"}
    registry.update(session, sp.id, attributes={"email": "", "display_name": "cn"})
    assert sp.attributes == {"display_name": "cn"}


def test_a_name_of_one_character(session):
    assert registry.add(session, _md(ACS), name="x").name == "x"


def test_add_picks_the_entity_id_from_an_aggregate(session):
    one = _md(ACS, entity_id="https://a.test").decode()
    two = _md(_acs("https://b.test/acs", 0), entity_id="https://b.test").decode()
    agg = f'<md:EntitiesDescriptor xmlns:md="{MD}">{one}{two}</md:EntitiesDescriptor>'.encode()
    assert registry.add(session, agg, entity_id="https://b.test").entity_id == "https://b.test"
    assert _refused(registry.add, session, agg)[0] == "metadata_invalid"


def test_metadata_that_is_not_utf8_is_kept_with_replacement_characters(session):
    text = _md(ACS, extra=ORG.format("Caf\u00e9")).decode()
    latin1 = ('<?xml version="1.0" encoding="ISO-8859-1"?>' + text).encode("latin-1")
    assert b"Caf\xe9" in latin1
    sp = registry.add(session, latin1)
    assert sp.name == "Caf\u00e9" and "Caf\ufffd" in sp.metadata_xml
    other = latin1.replace(b"https://sp.test/acs", b"https://sp.test/acs2")
    registry.update(session, sp.id, metadata_xml=other)
    assert "Caf\ufffd" in sp.metadata_xml and "acs2" in sp.metadata_xml


def test_a_certificate_is_strict_base64_and_an_empty_one_is_refused_alike():
    _, der = _cert()
    # A lenient decoder would drop the '!' and read the certificate.
    code, message = _refused(registry.parse_metadata, _md(_key(der[:30] + "!" + der[30:]) + ACS))
    assert code == "metadata_invalid" and message.startswith("unreadable certificate in metadata: ")
    empty = _refused(registry.parse_metadata, _md(_key("") + ACS))
    blank = _refused(registry.parse_metadata, _md(_key(" \n ") + ACS))
    assert empty == blank and empty[0] == "metadata_invalid"


def test_the_default_nameid_format_is_email_address(session):
    assert registry.add(session, _md(ACS)).nameid_format == "emailAddress"


def test_a_concurrent_add_of_the_same_entity_id_is_refused_by_the_unique_index(
    session, monkeypatch
):
    # Two replicas adding the same SP: both look first and find nothing, and the second
    # INSERT meets the first one's row. find() is made to miss the row, as it would
    # for the replica that looked before the other committed; the row and the index are real.
    registry.add(session, _md(ACS))
    monkeypatch.setattr(registry, "find", lambda session, entity_id: None)
    assert _refused(registry.add, session, _md(ACS)) == (
        "sp_exists",
        "an SP with entityID 'https://sp.test/m' exists already",
    )
    session.rollback()  # as the caller's transaction would be after the refusal


def test_an_acs_without_a_location_is_refused_naming_the_empty_location():
    no_location = f'<md:AssertionConsumerService Binding="{BINDING_POST}" index="0"/>'
    assert _refused(registry.parse_metadata, _md(no_location)) == (
        "metadata_invalid",
        "ACS Location '' is not an http(s) URL",
    )


def test_an_empty_display_name_is_no_name():
    empty = _md(
        ACS,
        extra=ORG.replace("{}</md:OrganizationDisplayName>", "").replace(
            "<md:OrganizationDisplayName>", "<md:OrganizationDisplayName/>"
        ),
    )
    assert b"<md:OrganizationDisplayName/>" in empty
    assert registry.parse_metadata(empty).name is None


def test_only_entity_descriptors_of_an_aggregate_are_candidates():
    # An SPSSODescriptor that is not the child of an EntityDescriptor is not an SP.
    sp = _md(ACS, entity_id="https://a.test").decode()
    stray = (
        '<x:Wrapper xmlns:x="urn:example:x" entityID="https://stray.test">'
        f'<md:SPSSODescriptor protocolSupportEnumeration="x">{_acs("https://s.test/acs", 0)}'
        "</md:SPSSODescriptor></x:Wrapper>"
    )
    agg = f'<md:EntitiesDescriptor xmlns:md="{MD}">{stray}{sp}</md:EntitiesDescriptor>'.encode()
    assert registry.parse_metadata(agg).entity_id == "https://a.test"
