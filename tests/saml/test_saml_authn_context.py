"""RequestedAuthnContext: parsing untrusted XML, the comparison rules, the per-SP setting.

The end-to-end answers to real SP libraries are in ``tests/saml/test_saml_interop.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idp_service.saml import registry as sp_registry
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_context, authn_request
from idp_service.saml.protocol.authn_context import RANK, Requested, choose
from idp_service.saml.protocol.constants import AUTHN_CONTEXT_DEVICE_BOUND
from tests.procs import base_env
from tests.saml_support import NS, authn_request_xml, sp_metadata, write_file

AC = "urn:oasis:names:tc:SAML:2.0:ac:classes:"
PPT = AC + "PasswordProtectedTransport"
PASSWORD = AC + "Password"
UNSPECIFIED = AC + "unspecified"
KERBEROS = AC + "Kerberos"  # a standard class we do not rank
MFA = "https://refeds.org/profile/mfa"
DEVICE = AUTHN_CONTEXT_DEVICE_BOUND


def requested_xml(body: str, comparison: str | None = None) -> bytes:
    attr = f' Comparison="{comparison}"' if comparison is not None else ""
    extra = (
        f'<samlp:RequestedAuthnContext xmlns:samlp="{NS["samlp"]}" '
        f'xmlns:saml="{NS["saml"]}"{attr}>{body}</samlp:RequestedAuthnContext>'
    )
    xml = authn_request_xml(issuer="http://sp.test/metadata")
    return xml.replace(b"</samlp:AuthnRequest>", extra.encode() + b"</samlp:AuthnRequest>")


def class_refs(*urns: str) -> str:
    return "".join(f"<saml:AuthnContextClassRef>{u}</saml:AuthnContextClassRef>" for u in urns)


# ---- parsing -----------------------------------------------------------------------------


def test_absent_means_none_and_comparison_defaults_to_exact():
    assert authn_request.parse(authn_request_xml(issuer="x")).requested_authn_context is None
    parsed = authn_request.parse(requested_xml(class_refs(PPT, " " + DEVICE + "\n")))
    assert parsed.requested_authn_context == Requested("exact", (PPT, DEVICE))
    parsed = authn_request.parse(requested_xml(class_refs(PPT), "minimum"))
    assert parsed.requested_authn_context == Requested("minimum", (PPT,))
    decl = "<saml:AuthnContextDeclRef>urn:example:decl</saml:AuthnContextDeclRef>"
    parsed = authn_request.parse(requested_xml(decl, "better"))
    assert parsed.requested_authn_context == Requested("better", (), ("urn:example:decl",))


@pytest.mark.parametrize(
    "body,comparison",
    [
        (class_refs(PPT), "at-least"),  # not one of the four comparisons
        (class_refs(PPT), "EXACT"),
        ("", None),  # no reference at all
        (class_refs(""), None),  # an empty reference
        (class_refs("u" * 1025), None),
        (class_refs(*[f"urn:x:{i}" for i in range(33)]), None),
        (class_refs(PPT) + "<saml:AuthnContextDeclRef>d</saml:AuthnContextDeclRef>", None),
        (class_refs(PPT) + "<saml:Other>x</saml:Other>", None),
    ],
)
def test_schema_violations_are_saml_malformed(body, comparison):
    with pytest.raises(SamlError) as info:
        authn_request.parse(requested_xml(body, comparison))
    assert info.value.code == "saml_malformed"


def test_two_requested_contexts_are_malformed():
    xml = requested_xml(class_refs(PPT))
    twice = xml.replace(b"</samlp:AuthnRequest>", xml[xml.index(b"<samlp:Requested") :])
    with pytest.raises(SamlError) as info:
        authn_request.parse(twice)
    assert info.value.code == "saml_malformed"


REF_TEXT = st.one_of(
    st.sampled_from([PPT, PASSWORD, UNSPECIFIED, KERBEROS, MFA, DEVICE, "", " ", "x" * 1100]),
    st.text(alphabet="urn:oasis&<>;'\"abc/ \n\t", max_size=40),
)
CHILD = st.builds(
    lambda tag, text: f"<saml:{tag}>{text}</saml:{tag}>",
    st.sampled_from(["AuthnContextClassRef", "AuthnContextDeclRef", "Other", "Issuer"]),
    REF_TEXT,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(CHILD, st.text(max_size=20)), max_size=40).map("".join),
    st.one_of(st.none(), st.sampled_from(["exact", "minimum", "better", "maximum", "", "x&y"])),
)
def test_parsing_untrusted_requested_context_raises_only_saml_error(body, comparison):
    try:
        parsed = authn_request.parse(requested_xml(body, comparison))
    except SamlError as exc:
        assert exc.code in ("saml_malformed", "saml_dtd_forbidden")
        return
    requested = parsed.requested_authn_context
    assert requested is not None
    assert requested.comparison in authn_context.COMPARISONS
    refs = requested.class_refs + requested.decl_refs
    assert 0 < len(refs) <= authn_context.MAX_REFS
    assert bool(requested.class_refs) != bool(requested.decl_refs)
    assert all(r and r == r.strip() and len(r) <= 1024 for r in refs)
    chosen = choose(requested)
    assert chosen in (*authn_context.ASSERTABLE, None)


# ---- the comparison rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    "comparison,classes,expected",
    [
        # exact (also the default): only a literal match of a class we assert
        ("exact", [PPT], None),  # node-saml's default: we check no password
        ("exact", [PASSWORD], None),
        ("exact", [DEVICE], DEVICE),
        ("exact", [PPT, DEVICE], DEVICE),
        ("exact", [PPT, UNSPECIFIED], UNSPECIFIED),
        ("exact", [UNSPECIFIED, DEVICE], DEVICE),  # the more specific of ours
        ("exact", [MFA], None),
        # minimum: at least as strong as one requested class
        ("minimum", [PPT], DEVICE),
        ("minimum", [PASSWORD], DEVICE),
        ("minimum", [UNSPECIFIED], DEVICE),
        ("minimum", [DEVICE], DEVICE),
        ("minimum", [MFA], None),  # one factor is not two
        ("minimum", [MFA, PPT], DEVICE),
        ("minimum", [KERBEROS], None),  # unranked: cannot compare
        # better: stronger than one requested class
        ("better", [PPT], DEVICE),
        ("better", [UNSPECIFIED], DEVICE),
        ("better", [DEVICE], None),
        ("better", [MFA], None),
        # maximum: as strong as possible without exceeding one requested class
        ("maximum", [MFA], DEVICE),
        ("maximum", [DEVICE], DEVICE),
        ("maximum", [PPT], UNSPECIFIED),
        ("maximum", [UNSPECIFIED], UNSPECIFIED),
        ("maximum", [KERBEROS], None),
    ],
)
def test_choose(comparison, classes, expected):
    assert choose(Requested(comparison, tuple(classes))) == expected


def test_no_request_asserts_device_bound_and_declarations_are_never_satisfied():
    assert choose(None) == DEVICE
    for comparison in authn_context.COMPARISONS:
        assert choose(Requested(comparison, (), ("urn:example:decl",))) is None


RANKED = st.sampled_from(sorted(RANK))


@given(
    st.sampled_from(authn_context.COMPARISONS),
    st.lists(st.one_of(RANKED, st.sampled_from([KERBEROS, "urn:x:y"])), min_size=1, max_size=6),
)
def test_choice_is_consistent_with_the_strength_order(comparison, classes):
    chosen = choose(Requested(comparison, tuple(classes)))
    ranks = [RANK[c] for c in classes if c in RANK]
    if comparison == "exact":
        assert chosen is None or chosen in classes
        assert (chosen is None) == (not set(classes) & set(authn_context.ASSERTABLE))
        return
    ours = [RANK[a] for a in authn_context.ASSERTABLE]
    ok = {
        "minimum": lambda o: any(o >= r for r in ranks),
        "better": lambda o: any(o > r for r in ranks),
        "maximum": lambda o: any(o <= r for r in ranks),
    }[comparison]
    satisfying = [o for o in ours if ok(o)]
    if not satisfying:
        assert chosen is None
    else:
        assert chosen is not None and RANK[chosen] == max(satisfying)


def test_device_bound_ranks_above_passwords_and_below_multi_factor():
    assert RANK[UNSPECIFIED] < RANK[PASSWORD] < RANK[PPT] < RANK[DEVICE] < RANK[MFA]


# ---- the per-SP setting ------------------------------------------------------------------


def _accepted(requested: Requested | None, mode: str) -> authn_request.Accepted:
    xml = authn_request_xml(issuer="http://sp.test/metadata")
    parsed = authn_request.parse(xml)
    parsed = authn_request.AuthnRequest(**{**parsed.__dict__, "requested_authn_context": requested})
    return authn_request.Accepted(
        request=parsed,
        sp_id="x",
        sp_entity_id="http://sp.test/metadata",
        sp_name="SP",
        acs_url="http://sp.test/acs",
        binding="redirect",
        relay_state=None,
        signed=False,
        identity_broker=False,
        sp_settings={"nameid_format": "emailAddress", "requested_authn_context": mode},
    )


def test_strict_refuses_with_no_authn_context_and_lenient_asserts_device_bound():
    exact_ppt = Requested("exact", (PPT,))
    with pytest.raises(SamlError) as info:
        authn_request.policy_check(_accepted(exact_ppt, "strict"))
    assert info.value.code == "saml_no_authn_context"
    assert info.value.saml_status == (
        "urn:oasis:names:tc:SAML:2.0:status:Responder",
        "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext",
    )
    assert info.value.audit_details == {
        "requested_authn_context": {"comparison": "exact", "classes": [PPT]}
    }
    lenient = _accepted(exact_ppt, "lenient")
    authn_request.policy_check(lenient)
    assert lenient.context()["authn_context_class"] == DEVICE
    # A request we can satisfy is answered the same way in both modes.
    for mode in ("strict", "lenient"):
        accepted = _accepted(Requested("exact", (PPT, UNSPECIFIED)), mode)
        authn_request.policy_check(accepted)
        assert accepted.context()["authn_context_class"] == UNSPECIFIED


def test_registry_validates_the_setting(sqlite_url):
    from idp_service.platform.db import Database
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    md = sp_metadata("http://reg.test/metadata", ["http://reg.test/acs"])
    with db.session() as s:
        sp = sp_registry.add(s, md)
        assert sp.requested_authn_context == "strict"
        assert sp_registry.snapshot(sp)["requested_authn_context"] == "strict"
        for bad in ("loose", "", 1, True):
            with pytest.raises(sp_registry.RegistryError) as info:
                sp_registry.update(s, sp.id, requested_authn_context=bad)
            assert info.value.code == "setting_invalid"
        sp_registry.update(s, sp.id, requested_authn_context="lenient")
        assert sp_registry.to_json(sp)["requested_authn_context"] == "lenient"
    db.dispose()


def _cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "idp_service", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_cli_add_and_update_set_it(tmp_path, sqlite_url):
    env = base_env(DEVICETRUST_DATABASE_URL=sqlite_url, DEVICETRUST_DATA_DIR=str(tmp_path))
    _cli(env, "migrate")
    md = write_file(
        tmp_path,
        "sp.xml",
        sp_metadata("http://cli.test/metadata", ["http://cli.test/acs"]).decode(),
    )
    added = json.loads(
        _cli(
            env, "sp", "add", "--metadata", md, "--requested-authn-context", "lenient", "--json"
        ).stdout
    )
    assert added["requested_authn_context"] == "lenient"
    shown = _cli(env, "sp", "show", "http://cli.test/metadata").stdout
    assert "requested_authn_context: lenient" in shown
    updated = json.loads(
        _cli(
            env,
            "sp",
            "update",
            "http://cli.test/metadata",
            "--requested-authn-context",
            "strict",
            "--json",
        ).stdout
    )
    assert updated["requested_authn_context"] == "strict"
    bad = subprocess.run(
        [sys.executable, "-m", "idp_service", "sp", "update", "http://cli.test/metadata"]
        + ["--requested-authn-context", "loose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "loose" in bad.stderr


def test_admin_api_and_console_show_it(service_ctx):
    from idp_service.api import openapi_document
    from tests.api_helpers import make_token

    db = service_ctx.extensions["devicetrust"].db
    token = make_token(db, "writer", "write")
    client = service_ctx.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    xml = sp_metadata("https://api.example.com/meta", ["https://api.example.com/acs"]).decode()
    r = client.post("/api/v1/sps", json={"metadata_xml": xml}, headers=headers)
    assert r.status_code == 201 and r.json["requested_authn_context"] == "strict"
    sp_id = r.json["id"]
    r = client.patch(
        f"/api/v1/sps/{sp_id}", json={"requested_authn_context": "lenient"}, headers=headers
    )
    assert r.status_code == 200 and r.json["requested_authn_context"] == "lenient"
    r = client.patch(
        f"/api/v1/sps/{sp_id}", json={"requested_authn_context": "loose"}, headers=headers
    )
    assert r.status_code == 400
    assert client.get(f"/api/v1/sps/{sp_id}", headers=headers).json["requested_authn_context"] == (
        "lenient"
    )
    doc = openapi_document()
    body = doc["paths"]["/api/v1/sps/{sp}"]["patch"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert schema["properties"]["requested_authn_context"]["enum"] == ["strict", "lenient"]

    # The console's SP page shows it.
    from idp_service.admin import bootstrap
    from tests.admin_helpers import csrf_of

    with db.session() as s:
        bootstrap_token, _ = bootstrap.issue(s, actor="test")
    console = service_ctx.test_client()
    csrf = csrf_of(console.get("/admin/bootstrap").get_data(as_text=True))
    console.post("/admin/bootstrap", data={"token": bootstrap_token, "csrf": csrf})
    page = console.get("/admin/sps").get_data(as_text=True)
    assert "<th>Requested context</th>" in page
    assert "<td>lenient</td>" in page
