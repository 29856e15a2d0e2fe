"""Interop with node-saml (``@node-saml/node-saml``, pinned in tests/node_saml/package.json).

node-saml asks by default for ``exact PasswordProtectedTransport``. devicetrust
checks no password, so a strict SP gets a signed ``Responder/NoAuthnContext``
that node-saml reports as a status error; the same SP set to ``lenient``, or a
node-saml configured for the device-bound class, signs in. The SP runs as a
real Node process (``tests/node_saml/sp.mjs``) that makes the signed
AuthnRequests and validates the Responses itself, InResponseTo included.

Needs ``node`` and ``npm``; the first run installs the pinned package with
``npm ci`` (from the lock file) into ``tests/node_saml/node_modules``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.saml.test_saml_interop import add_sp, enroll, idp_cert
from tests.saml.test_saml_interop import idp as idp  # noqa: F401 - the fixture
from tests.saml_support import (
    IDP_PUBLIC,
    FlaskClient,
    cached_key_pair,
    device_login,
    posted_form,
    strict_check,
)

NODE_DIR = Path(__file__).resolve().parents[1] / "node_saml"
SP_ENTITY = "http://node-sp.test/metadata"
ACS = "http://node-sp.test/acs"
DEVICE_BOUND = "urn:devicetrust:ac:classes:device-bound"


@pytest.fixture(scope="session")
def node_saml() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the node-saml interop test")
    if not (NODE_DIR / "node_modules" / "@node-saml" / "node-saml").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


class NodeSp:
    """The node-saml SP process: one JSON command a line in, one JSON answer a line out."""

    def __init__(self, node_dir: Path, idp_cert_pem: str, options: dict | None = None) -> None:
        key, cert = cached_key_pair("node-saml-sp")
        config = {
            "idpCert": idp_cert_pem,
            "entryPoint": IDP_PUBLIC + "/saml/sso",
            "issuer": SP_ENTITY,
            "callbackUrl": ACS,
            "privateKey": key,
            "publicCert": cert,
            "options": options or {},
        }
        self.proc = subprocess.Popen(
            ["node", "sp.mjs", json.dumps(config)],
            cwd=node_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.metadata = self._read()["metadata"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def ask(self, **cmd: str) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def node_sp(node_saml, idp):
    started: list[NodeSp] = []

    def start(options: dict | None = None) -> NodeSp:
        sp = NodeSp(node_saml, idp_cert(idp, "rsa"), options)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.close()


def _sso(client, sp: NodeSp):
    url = sp.ask(op="login", relayState="/home")["url"]
    assert url.startswith(IDP_PUBLIC + "/saml/sso?") and "Signature=" in url
    return client.get(url[len(IDP_PUBLIC) :])


def test_node_saml_default_context_gets_no_authn_context(idp, node_sp):
    sp = node_sp()
    add_sp(idp, sp.metadata)
    r = _sso(FlaskClient(idp), sp)
    assert r.status_code == 400  # answered at the SSO endpoint, no login page
    form = posted_form(r.text)
    assert form.action == ACS and form.relay_state == "/home"
    result = sp.ask(op="acs", SAMLResponse=form.saml_response)
    assert result["ok"] is False
    assert result["error"] == "SAML provider returned Responder error: saml_no_authn_context"
    assert "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext" in json.dumps(result["status"])


@pytest.mark.parametrize(
    "options,setting",
    [
        ({}, {"requested_authn_context": "lenient"}),
        ({"authnContext": [DEVICE_BOUND]}, {}),
        ({"disableRequestedAuthnContext": True}, {}),
    ],
    ids=["lenient-sp", "device-bound-requested", "no-requested-context"],
)
def test_node_saml_signs_in(idp, node_sp, options, setting):
    client = FlaskClient(idp)
    device = enroll(idp, client, "ida@example.com")
    sp = node_sp(options)
    add_sp(idp, sp.metadata, **setting)
    r = _sso(client, sp)
    assert r.status_code == 303, r.text
    form = posted_form(device_login(client, device, r.headers["Location"]).text)
    result = sp.ask(op="acs", SAMLResponse=form.saml_response)
    assert result["ok"] is True, result
    assert result["profile"]["nameID"] == "ida@example.com"
    assert result["profile"]["issuer"] == IDP_PUBLIC + "/saml/metadata"
    strict_check(
        form.xml,
        idp_cert=idp_cert(idp, "rsa"),
        sp_entity_id=SP_ENTITY,
        acs_url=ACS,
        request_id=result["profile"]["inResponseTo"],
    )
