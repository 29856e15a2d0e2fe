"""A key change committed with the CLI is what every gunicorn worker serves and signs with,
from the next request on (SQLite and PostgreSQL).

The service runs with several workers; every HTTP request below opens a new
connection (``Connection: close``) so different workers answer. Each step of
the rollover (stage, activate, retire) is taken with ``devicetrust keys
rotate`` and is followed at once by many metadata fetches and by sign-ins of a
python3-saml SP: every answer must show the committed key set, and every
Response must be signed with the committed active key.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from tests.procs import start_service
from tests.saml_support import (
    NS,
    SimDevice,
    device_login,
    onelogin_request_data,
    onelogin_settings,
    posted_form,
    strict_check,
    write_file,
)

WORKERS = 3
FETCHES = 24
LOGINS = 3


@pytest.fixture
def svc(tmp_path, database_url):
    service = start_service(tmp_path, database_url, workers=WORKERS)
    yield service
    service.stop()


def fresh_client(url: str) -> httpx.Client:
    """A browser whose every request is a new TCP connection (so any worker may answer)."""
    return httpx.Client(base_url=url, headers={"Connection": "close"}, timeout=30)


def published_certs(url: str) -> list[str]:
    """The signing certificates of one metadata fetch, in document order."""
    with httpx.Client(headers={"Connection": "close"}, timeout=30) as c:
        r = c.get(url + "/saml/metadata")
    assert r.status_code == 200
    doc = etree.fromstring(r.content)
    return [el.text for el in doc.iter(f"{{{NS['ds']}}}X509Certificate")]


def cert_b64(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def keys_by_status(svc) -> dict[str, list[str]]:
    rows = json.loads(svc.cli("keys", "list", "--json").stdout)
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["status"], []).append(row["id"])
    return out


def pem_of(svc, key_id: str, database_url: str) -> str:
    from sqlalchemy import create_engine, select

    from idp_service.saml.tables import SigningKey

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(SigningKey.cert_pem).where(SigningKey.id == key_id)).scalar()
    finally:
        engine.dispose()


def sign_in(svc, settings: dict, device: SimDevice) -> tuple[bytes, str]:
    """One SP-initiated sign-in through the real service; (Response XML, request ID)."""
    auth = OneLogin_Saml2_Auth(onelogin_request_data("http://sp.test/login"), settings)
    url = auth.login()
    request_id = auth.get_last_request_id()
    with fresh_client(svc.url) as browser:
        r = browser.get(url[len(svc.url) :])
        assert r.status_code == 303, r.text
        page = device_login(browser, device, r.headers["Location"])
    assert page.status_code == 200, page.text
    form = posted_form(page.text)
    sp = OneLogin_Saml2_Auth(
        onelogin_request_data(form.action, {"SAMLResponse": form.saml_response}), settings
    )
    sp.process_response(request_id=request_id)
    assert sp.get_errors() == [], sp.get_last_error_reason()
    return base64.b64decode(form.saml_response), request_id


def signing_cert_of(xml: bytes) -> str:
    root = etree.fromstring(xml)
    return root.find("ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS).text


def test_every_worker_serves_and_signs_with_the_committed_keys(svc, tmp_path, database_url):
    # The SP and a device, registered through the real CLI and HTTP endpoints.
    old = keys_by_status(svc)["active"][0]
    old_pem = pem_of(svc, old, database_url)
    settings = onelogin_settings("http://sp.test", old_pem)
    for key in ("entityId",):
        settings["idp"][key] = svc.url + "/saml/metadata"
    settings["idp"]["singleSignOnService"]["url"] = svc.url + "/saml/sso"
    md = OneLogin_Saml2_Settings(settings, sp_validation_only=True).get_sp_metadata()
    svc.cli("sp", "add", "--metadata", write_file(tmp_path, "sp.xml", md.decode()))
    device = SimDevice()
    with fresh_client(svc.url) as c:
        device.register(c, svc.enroll_code("kim@example.com"))

    # Every worker has loaded the current keys (and signed with them).
    assert {tuple(published_certs(svc.url)) for _ in range(FETCHES)} == {(cert_b64(old_pem),)}
    xml, _ = sign_in(svc, settings, device)
    assert signing_cert_of(xml) == cert_b64(old_pem)

    # 1. stage: the next key is published at once, by every worker, after the active one.
    staged = json.loads(svc.cli("keys", "rotate", "--json").stdout)["key"]["id"]
    new_pem = pem_of(svc, staged, database_url)
    both = (cert_b64(old_pem), cert_b64(new_pem))
    assert {tuple(published_certs(svc.url)) for _ in range(FETCHES)} == {both}

    # 2. activate: every worker signs with the new key from the next request on.
    svc.cli("keys", "rotate", "--activate")
    assert {tuple(published_certs(svc.url)) for _ in range(FETCHES)} == {both[::-1]}
    settings["idp"]["x509cert"] = new_pem
    for _ in range(LOGINS):
        xml, request_id = sign_in(svc, settings, device)
        assert signing_cert_of(xml) == cert_b64(new_pem)
        strict_check(
            xml,
            idp_cert=new_pem,
            sp_entity_id="http://sp.test/metadata",
            acs_url="http://sp.test/acs",
            request_id=request_id,
            idp_public=svc.url,
        )

    # 3. retire: the old key leaves every worker's metadata at once.
    svc.cli("keys", "rotate", "--retire")
    assert {tuple(published_certs(svc.url)) for _ in range(FETCHES)} == {(cert_b64(new_pem),)}
    assert keys_by_status(svc)["active"] == [staged]
