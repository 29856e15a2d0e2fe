"""What a sign-in reads off a registered SP: each way resolve_acs picks (or refuses) an ACS,
and every setting snapshot freezes into the login transaction.

Written for the mutation run over ``idp_service/saml/protocol/sp_view.py``: the existing
tests reached resolve_acs through a parsed metadata document, which always marks its
first endpoint the default, and never read most of snapshot's fields.
"""

from __future__ import annotations

import pytest

from idp_service.saml.errors import SamlError
from idp_service.saml.protocol.constants import BINDING_POST, BINDING_REDIRECT
from idp_service.saml.protocol.sp_view import resolve_acs, snapshot
from idp_service.saml.tables import ServiceProvider

ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"


def _ep(location: str, index: int, is_default: bool | None = None, binding: str = BINDING_POST):
    return {"binding": binding, "location": location, "index": index, "is_default": is_default}


def _sp(**fields) -> ServiceProvider:
    values = {
        "id": "sp-1",
        "entity_id": "https://sp.test/metadata",
        "name": "Test SP",
        "acs": [_ep("https://sp.test/a", 0), _ep("https://sp.test/b", 1)],
        "signing_certs": [],
        "encryption_certs": ["CERT-1", "CERT-2"],
        "nameid_format": "persistent",
        "attributes": {"email": "mail"},
        "sign_response": False,
        "sign_assertion": True,
        "signature_algorithm": "rsa-sha512",
        "encrypt_assertion": True,
        "session_minutes": 42,
        "requested_authn_context": "lenient",
    }
    values.update(fields)
    return ServiceProvider(**values)


def _code(**kwargs) -> str:
    sp = kwargs.pop("sp")
    with pytest.raises(SamlError) as err:
        resolve_acs(sp, **kwargs)
    return err.value.code


def test_the_default_is_the_first_marked_true():
    sp = _sp(acs=[_ep("https://sp.test/a", 0, None), _ep("https://sp.test/b", 1, True)])
    assert resolve_acs(sp) == "https://sp.test/b"


def test_else_the_first_not_marked_false():
    sp = _sp(acs=[_ep("https://sp.test/a", 0, False), _ep("https://sp.test/b", 1, None)])
    assert resolve_acs(sp) == "https://sp.test/b"
    sp = _sp(acs=[_ep("https://sp.test/a", 0, None), _ep("https://sp.test/b", 1, None)])
    assert resolve_acs(sp) == "https://sp.test/a"


def test_else_the_first():
    sp = _sp(acs=[_ep("https://sp.test/a", 0, False), _ep("https://sp.test/b", 1, False)])
    assert resolve_acs(sp) == "https://sp.test/a"


def test_by_index():
    sp = _sp(acs=[_ep("https://sp.test/a", 3, True), _ep("https://sp.test/b", 7)])
    assert resolve_acs(sp, index=7) == "https://sp.test/b"
    assert resolve_acs(sp, index=3) == "https://sp.test/a"
    assert resolve_acs(sp, index=3, binding=BINDING_POST) == "https://sp.test/a"
    assert _code(sp=sp, index=0) == "saml_acs_mismatch"
    assert _code(sp=sp, index=4) == "saml_acs_mismatch"


def test_by_exact_url_and_the_post_binding():
    sp = _sp(
        acs=[_ep("https://sp.test/a", 0, True), _ep("https://sp.test/r", 1, None, BINDING_REDIRECT)]
    )
    assert resolve_acs(sp, url="https://sp.test/a") == "https://sp.test/a"
    assert _code(sp=sp, url="https://sp.test/r") == "saml_acs_mismatch"
    assert _code(sp=sp, url="https://sp.test/") == "saml_acs_mismatch"


def test_only_the_post_binding_is_answered():
    sp = _sp()
    for binding in (ARTIFACT, BINDING_REDIRECT):
        assert _code(sp=sp, binding=binding) == "saml_unsupported_binding"
        assert _code(sp=sp, url="https://sp.test/a", binding=binding) == "saml_unsupported_binding"
    assert resolve_acs(sp, binding=BINDING_POST) == "https://sp.test/a"


def test_a_stored_endpoint_with_another_binding_is_never_picked():
    """The metadata parser keeps only HTTP-POST endpoints; a row that holds another
    binding (written before that rule, or by hand) is never answered, by index nor
    as the default."""
    artifact = _ep("https://sp.test/art", 6, True, ARTIFACT)
    sp = _sp(acs=[artifact, _ep("https://sp.test/a", 0, None)])
    assert _code(sp=sp, index=6) == "saml_acs_mismatch"
    assert _code(sp=sp, index=6, binding=BINDING_POST) == "saml_acs_mismatch"
    assert resolve_acs(sp) == "https://sp.test/a"
    assert resolve_acs(sp, index=0) == "https://sp.test/a"
    for acs in ([artifact], [], None):
        assert _code(sp=_sp(acs=acs)) == "saml_acs_mismatch"


def test_url_and_index_are_exclusive():
    assert _code(sp=_sp(), url="https://sp.test/a", index=0) == "saml_malformed"


def test_snapshot_freezes_every_setting():
    sp = _sp()
    assert snapshot(sp) == {
        "id": "sp-1",
        "name": "Test SP",
        "nameid_format": "persistent",
        "attributes": {"email": "mail"},
        "sign_response": False,
        "sign_assertion": True,
        "signature_algorithm": "rsa-sha512",
        "encrypt_cert": "CERT-1",
        "session_minutes": 42,
        "requested_authn_context": "lenient",
    }
    frozen = snapshot(sp)
    frozen["attributes"]["x"] = "y"
    assert sp.attributes == {"email": "mail"}  # a copy, not the row's own dict


def test_snapshot_encrypts_only_when_asked_and_with_a_certificate():
    assert snapshot(_sp(encrypt_assertion=False))["encrypt_cert"] is None
    assert snapshot(_sp(encryption_certs=[]))["encrypt_cert"] is None
    assert snapshot(_sp(encryption_certs=None))["encrypt_cert"] is None
    assert snapshot(_sp(attributes=None))["attributes"] == {}
