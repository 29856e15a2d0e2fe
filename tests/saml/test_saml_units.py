"""Unit and property tests of the SAML building blocks: decoding, parsing, metadata import,
ACS matching, key rollover and the CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from idp_service.saml import keys
from idp_service.saml import registry as sp_registry
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_request, xmlsafe
from tests.procs import base_env
from tests.saml_support import NS, authn_request_xml, cached_key_pair, sp_metadata, write_file

# ---- untrusted bytes meet parsers: only SamlError may come out -----------------------------

XMLISH = st.one_of(
    st.binary(max_size=600),
    st.text(alphabet="<>/=\"' !?[]&;:abcdeIDsamlpAuthnRequest-_$%{}\n", max_size=600).map(
        str.encode
    ),
    st.builds(
        lambda a, b: authn_request_xml(issuer="http://sp.test/metadata")[:a] + b,
        st.integers(0, 400),
        st.binary(max_size=50),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(XMLISH)
def test_parse_raises_only_saml_error(data):
    try:
        authn_request.parse(data)
    except SamlError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_inflate_raises_only_saml_error(data):
    try:
        out = authn_request.inflate(data, limit=1000)
        assert len(out) <= 1000
    except SamlError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=800),
        st.lists(
            st.tuples(
                st.sampled_from(["SAMLRequest", "RelayState", "SigAlg", "Signature", "x"]),
                st.binary(max_size=120),
            ),
            max_size=6,
        ).map(lambda kv: b"&".join(k.encode() + b"=" + v for k, v in kv)),
    )
)
def test_read_redirect_raises_only_saml_error(query):
    try:
        authn_request.read_redirect(query)
    except SamlError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500), st.one_of(st.none(), st.text(max_size=1200)))
def test_read_post_raises_only_saml_error(saml_request, relay_state):
    try:
        incoming = authn_request.read_post(saml_request, relay_state)
        authn_request.parse(incoming.xml)
    except SamlError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_deflated_garbage_parses_to_saml_error_only(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    query = b"SAMLRequest=" + base64.b64encode(c.compress(data) + c.flush()).replace(b"+", b"%2B")
    try:
        authn_request.parse(authn_request.read_redirect(query).xml)
    except SamlError:
        pass


def test_inflate_limit_is_exact():
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = c.compress(b"x" * 1000) + c.flush()
    assert authn_request.inflate(data, limit=1000) == b"x" * 1000
    with pytest.raises(SamlError) as exc:
        authn_request.inflate(data, limit=999)
    assert exc.value.code == "saml_inflate_limit"
    with pytest.raises(SamlError) as exc:
        authn_request.inflate(data[:-3], limit=5000)
    assert exc.value.code == "saml_malformed"


def test_parser_never_expands_entities_or_reads_files():
    with pytest.raises(SamlError) as exc:
        xmlsafe.parse(
            b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>', max_size=9999
        )
    assert exc.value.code == "saml_dtd_forbidden"
    with pytest.raises(SamlError) as exc:
        xmlsafe.parse(b"<a>&undefined;</a>", max_size=9999)
    assert exc.value.code == "saml_malformed"
    with pytest.raises(SamlError) as exc:
        xmlsafe.parse(b"<a/>" * 10, max_size=5)
    assert exc.value.code == "saml_too_large"


def test_parsed_request_fields():
    xml = authn_request_xml(
        issuer="http://sp.test/metadata",
        acs_url="http://sp.test/acs",
        request_id="_r1",
        nameid_format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        subject="bob@example.com",
        extra_attrs=' ForceAuthn="true"',
    )
    req = authn_request.parse(xml)
    assert (req.id, req.issuer, req.acs_url, req.subject) == (
        "_r1",
        "http://sp.test/metadata",
        "http://sp.test/acs",
        "bob@example.com",
    )
    assert req.force_authn and not req.is_passive
    assert req.nameid_format.endswith(":persistent")


# ---- SP metadata and ACS matching -------------------------------------------------------


def test_metadata_import_and_exact_acs_matching():
    _, cert = cached_key_pair("unit-sp")
    md = sp_metadata(
        "http://sp.test/metadata",
        ["http://sp.test/acs", "https://sp.test/other"],
        cert_pem=cert,
        authn_requests_signed=True,
        nameid_format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    )
    parsed = sp_registry.parse_metadata(md)
    assert parsed.entity_id == "http://sp.test/metadata"
    assert [a["location"] for a in parsed.acs] == ["http://sp.test/acs", "https://sp.test/other"]
    assert parsed.signing_certs == [cert] and parsed.encryption_certs == [cert]
    assert parsed.authn_requests_signed and parsed.nameid_formats == ["persistent"]

    class Sp:
        acs = parsed.acs

    assert sp_registry.resolve_acs(Sp) == "http://sp.test/acs"
    assert sp_registry.resolve_acs(Sp, index=1) == "https://sp.test/other"
    assert sp_registry.resolve_acs(Sp, url="https://sp.test/other") == "https://sp.test/other"
    for bad in ("https://sp.test/other/", "https://sp.test/othe", "https://SP.test/other"):
        with pytest.raises(SamlError) as exc:
            sp_registry.resolve_acs(Sp, url=bad)
        assert exc.value.code == "saml_acs_mismatch"
    with pytest.raises(SamlError) as exc:
        sp_registry.resolve_acs(
            Sp,
            url="http://sp.test/acs",
            binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
        )
    assert exc.value.code == "saml_unsupported_binding"


@pytest.mark.parametrize(
    "doc",
    [
        b"<x/>",
        b'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="e"/>',
        b'<!DOCTYPE x [<!ENTITY a "b">]><x/>',
        sp_metadata("http://sp.test/m", ["javascript:alert(1)"]),
    ],
)
def test_bad_metadata_is_refused_with_a_code(doc):
    with pytest.raises(sp_registry.RegistryError) as exc:
        sp_registry.parse_metadata(doc)
    assert exc.value.code == "metadata_invalid"


# ---- keys: first use, rollover, what metadata publishes ----------------------------------


def test_staged_rollover(sqlite_url):
    from idp_service.platform.db import Database
    from idp_service.platform.migrate import upgrade
    from idp_service.saml.protocol import metadata

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    ring = keys.KeyRing(db)
    first = ring.active("rsa")
    assert [k.id for k in ring.published()] == [first.id]

    with db.session() as s:
        staged = keys.stage_next(s, "rsa")
        assert keys.stage_next(s, "rsa").id == staged.id  # idempotent
    ring.invalidate()
    assert ring.active("rsa").id == first.id  # still signing with the old key
    published = {k.id: k.status for k in ring.published()}
    assert published == {first.id: "active", staged.id: "next"}
    doc = etree.fromstring(metadata.build("http://idp.test", ring.published()))
    assert len(doc.findall(".//ds:X509Certificate", NS)) == 2

    with db.session() as s:
        keys.activate_next(s, "rsa")
    ring.invalidate()
    assert ring.active("rsa").id == staged.id
    assert {k.id: k.status for k in ring.published()} == {
        staged.id: "active",
        first.id: "previous",
    }
    with db.session() as s:
        assert keys.retire_previous(s, "rsa") == [first.id]
        with pytest.raises(LookupError):
            keys.activate_next(s, "rsa")
    ring.invalidate()
    assert [k.id for k in ring.published()] == [staged.id]
    # Another process sees the same keys (they live in the database).
    assert keys.KeyRing(db).active("rsa").cert_pem == ring.active("rsa").cert_pem
    db.dispose()


def test_ec_key_is_made_on_first_use_and_signs_with_ecdsa(sqlite_url):
    from idp_service.platform.db import Database
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    ring = keys.KeyRing(db)
    ec_key = ring.active("ec")
    assert ec_key.key_type == "ec" and "BEGIN CERTIFICATE" in ec_key.cert_pem
    assert {k.key_type for k in ring.published()} == {"rsa", "ec"}
    db.dispose()


# ---- CLI ----------------------------------------------------------------------------------


def _cli(env, *args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "idp_service", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def test_cli_sp_and_keys(tmp_path, sqlite_url):
    env = base_env(DEVICETRUST_DATABASE_URL=sqlite_url, DEVICETRUST_DATA_DIR=str(tmp_path))
    _cli(env, "migrate")
    _, cert = cached_key_pair("cli-sp")
    md = write_file(
        tmp_path,
        "sp.xml",
        sp_metadata("http://cli.test/metadata", ["http://cli.test/acs"], cert_pem=cert).decode(),
    )
    added = json.loads(
        _cli(
            env,
            "sp",
            "add",
            "--metadata",
            md,
            "--name",
            "CLI app",
            "--nameid-format",
            "persistent",
            "--sign",
            "assertion",
            "--attribute",
            "groups=",
            "--attribute",
            "email=mail",
            "--json",
        ).stdout
    )
    assert added["name"] == "CLI app" and added["nameid_format"] == "persistent"
    assert added["sign_response"] is False and added["sign_assertion"] is True
    assert added["attributes"]["email"] == "mail" and "groups" not in added["attributes"]
    listed = json.loads(_cli(env, "sp", "list", "--json").stdout)
    assert [s["entity_id"] for s in listed] == ["http://cli.test/metadata"]
    updated = json.loads(
        _cli(env, "sp", "update", "CLI app", "--identity-broker", "--disable", "--json").stdout
    )
    assert (
        updated["identity_broker"] and updated["require_signed_requests"] and not updated["enabled"]
    )
    shown = json.loads(_cli(env, "sp", "show", "http://cli.test/metadata", "--json").stdout)
    assert shown["id"] == added["id"]
    bad = _cli(env, "sp", "update", "CLI app", "--session-minutes", "0", check=False)
    assert bad.returncode != 0 and "setting_invalid" in bad.stderr
    dup = _cli(env, "sp", "add", "--metadata", md, check=False)
    assert dup.returncode != 0 and "sp_exists" in dup.stderr
    assert json.loads(_cli(env, "sp", "remove", "CLI app", "--json").stdout) == {
        "removed": "http://cli.test/metadata"
    }
    missing = _cli(env, "sp", "show", "CLI app", check=False)
    assert missing.returncode != 0 and "sp_unknown" in missing.stderr

    before = json.loads(_cli(env, "keys", "list", "--json").stdout)
    assert [k["status"] for k in before] == ["active"]
    assert "BEGIN" not in json.dumps(before)  # never the private key
    staged = json.loads(_cli(env, "keys", "rotate", "--json").stdout)["key"]
    assert staged["status"] == "next"
    assert (
        json.loads(_cli(env, "keys", "rotate", "--activate", "--json").stdout)["key"]["id"]
        == staged["id"]
    )
    statuses = {
        k["id"]: k["status"] for k in json.loads(_cli(env, "keys", "list", "--json").stdout)
    }
    assert statuses == {staged["id"]: "active", before[0]["id"]: "previous"}
    assert json.loads(_cli(env, "keys", "rotate", "--retire", "--json").stdout)["retired"] == [
        before[0]["id"]
    ]


def test_comments_cannot_truncate_a_subject():
    # The comment-truncation attack (CVE-2017-11427 family): c14n ignores comments, so a
    # parser that stops at one would read "alice@example.com" from a signed subject.
    xml = authn_request_xml(issuer="http://sp.test/metadata", subject="alice@example.com.evil.org")
    xml = xml.replace(b"alice@example.com", b"alice@example.com<!---->")
    assert authn_request.parse(xml).subject == "alice@example.com.evil.org"


def test_a_committed_key_change_is_seen_by_the_next_use_in_every_ring(sqlite_url):
    """No time-based staleness: two rings (two processes) see each step at their next use."""
    from idp_service.platform.db import Database
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    here, there = keys.KeyRing(db), keys.KeyRing(db)
    first = here.active("rsa")
    assert there.active("rsa").id == first.id
    assert [k.id for k in there.published()] == [first.id]
    with db.session() as s:
        staged = keys.stage_next(s, "rsa").id
    for ring in (here, there):
        assert {k.id: k.status for k in ring.published()} == {first.id: "active", staged: "next"}
    with db.session() as s:
        keys.activate_next(s, "rsa")
    for ring in (here, there):
        assert ring.active("rsa").id == staged
    with db.session() as s:
        keys.retire_previous(s, "rsa")
    for ring in (here, there):
        assert [k.id for k in ring.published()] == [staged]
    # An unchanged generation reuses the parsed keys (no reload, same objects).
    assert here.active("rsa") is here.active("rsa")
    db.dispose()
