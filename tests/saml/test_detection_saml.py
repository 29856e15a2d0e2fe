"""A suspended device in a SAML sign-in: refused with device_suspended, AuthnFailed to the SP."""

from __future__ import annotations

import time

from lxml import etree

from idp_service.platform.models import Device
from tests.saml.test_saml_login import ACS, SP, enroll, idp, status_codes  # noqa: F401 - fixture
from tests.saml_support import (
    NS,
    FlaskClient,
    SimDevice,
    authn_request_xml,
    device_login,
    posted_form,
    redirect_query,
)
from trust_protocol.challenge import parse_challenge
from trust_protocol.response import ResponseBody, seal_response


class ClonedDevice(SimDevice):
    """The same keys answering from other hardware."""

    def answer(self, token: str) -> bytes:
        challenge = parse_challenge(token, self.verify_key)
        platform = {"os": "linux", "hardware_uuid": "hw-elsewhere", "serial": "SN-OTHER"}
        body = ResponseBody(token, self.keys.public_json(), platform, "test", time.time())
        return seal_response(body, challenge, self.keys)


def test_clone_in_a_saml_sign_in_gets_authn_failed(idp):  # noqa: F811 - the fixture
    client = FlaskClient(idp)
    device = enroll(idp, client, "june@example.com")
    clone = ClonedDevice(keys=device.keys, verify_key=device.verify_key)
    r = client.get(
        "/saml/sso?" + redirect_query(authn_request_xml(issuer=SP, request_id="_cl"), "rs")
    )
    page = device_login(client, clone, r.headers["Location"])
    assert page.status_code == 403
    assert '<code id="code">device_suspended</code>' in page.text
    posted = posted_form(page.text)
    assert posted.action == ACS
    assert status_codes(posted.xml) == ["Responder", "AuthnFailed"]
    assert etree.fromstring(posted.xml).find("saml:Assertion", NS) is None
    with idp.extensions["devicetrust"].db.session() as s:
        assert s.get(Device, device.id).state == "suspended"
    # The genuine device (no hardware ids in its answers here) is refused as well.
    r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP), "rs"))
    page = device_login(client, device, r.headers["Location"])
    assert '<code id="code">device_suspended</code>' in page.text


class LongInstanceDevice(SimDevice):
    """Answers with the longest platform values the protocol allows, alternating instances."""

    turn: int = 0

    def answer(self, token: str) -> bytes:
        challenge = parse_challenge(token, self.verify_key)
        self.turn += 1
        platform = {
            "os": "linux",
            "hardware_uuid": f"hw-{self.id}",
            "instance": ("A" if self.turn % 2 else "B") * 256,
        }
        body = ResponseBody(token, self.keys.public_json(), platform, "test", time.time())
        return seal_response(body, challenge, self.keys)


def test_long_instance_ids_are_bounded_and_still_detected(idp):  # noqa: F811 - the fixture
    client = FlaskClient(idp)
    device = enroll(idp, client, "kim@example.com")
    long = LongInstanceDevice(keys=device.keys, verify_key=device.verify_key)
    pages = []
    for _ in range(3):  # A, B, A
        r = client.get("/saml/sso?" + redirect_query(authn_request_xml(issuer=SP), "rs"))
        pages.append(device_login(client, long, r.headers["Location"]))
    assert [p.status_code for p in pages[:2]] == [200, 200]
    assert '<code id="code">device_suspended</code>' in pages[2].text
    with idp.extensions["devicetrust"].db.session() as s:
        stored = s.get(Device, device.id)
        assert stored.state == "suspended" and stored.agent_instance == "B" * 64
