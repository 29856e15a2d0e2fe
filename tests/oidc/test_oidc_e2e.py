"""The provider as a real service process, with a real agent answering, against relying
parties nobody here wrote: authlib's OAuth client (Python) and panva's openid-client
(Node, ``tests/node_oidc``), plus Chromium end to end for the code flow and the EAM
form-POST flow, and the posture gate refusing a sign-in.

One service and one agent serve the module (the agent replays a recorded Linux host
whose disk is not encrypted; a blocking check requires encryption, and the test user
is exempt from it except in the posture test). Clients are registered with the
``devicetrust oidc-client`` command line.

Chromium cannot reach login.microsoftonline.com here, so its EAM client's
redirect URI is a loopback page standing in for Entra's federation endpoint; the
exchange itself is the one ``test_oidc_eam.py`` checks rule by rule.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session

from tests.browser import support as browser
from tests.oidc.support import Tenant, query_of, verify_rs256_with_x5c
from tests.posture.test_posture_e2e import BLOCKING_CHECK, _use_fixture, _wait_for_report
from tests.procs import free_port, make_agent, start_service

with warnings.catch_warnings():  # authlib.jose is deprecated upstream, still authlib's own checks
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.oidc.core import CodeIDToken

NODE_DIR = Path(__file__).resolve().parents[1] / "node_oidc"
USER = "alice@example.com"


class Catcher:
    """A loopback relying party endpoint: records each request (query and form) it receives."""

    def __init__(self) -> None:
        self.hits: list[dict] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, body: bytes) -> None:
                parts = urlsplit(self.path)
                catcher.hits.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                        "form": {k: v[0] for k, v in parse_qs(body.decode()).items()},
                    }
                )
                page = b"<!doctype html><title>rp</title><h1 id=done>back at the app</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/start-eam"):
                    page = catcher.start_page.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(page)
                    return
                self._record(b"")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self._record(self.rfile.read(length))

            def log_message(self, *args) -> None:
                pass

        self.start_page = ""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oidc-e2e")
    checks = tmp / "checks"
    checks.mkdir()
    (checks / "system-disk-encrypted.yaml").write_text(BLOCKING_CHECK)
    device_dir = tmp / "recorded-device"
    _use_fixture(device_dir, "unencrypted")
    port = free_port()
    svc = start_service(
        tmp,
        f"sqlite:///{tmp / 'db.sqlite'}",
        agent_ports=[port],
        extra_env={"DEVICETRUST_CHECKS_DIR": str(checks), "DEVICETRUST_BUILTIN_CHECKS": "none"},
    )
    agent = make_agent(tmp, "oidc", port=port)
    catcher = Catcher()
    tenant = Tenant()
    try:
        agent.enroll(svc.url, svc.enroll_code(USER))
        agent.start("--replay", str(device_dir))
        _wait_for_report(svc, agent.cli_json("id")["device_id"])
        exempt = svc.cli_json(
            "exemptions",
            "add",
            "--check",
            "*",
            "--user",
            USER,
            "--days",
            "1",
            "--reason",
            "the OIDC tests sign in past the blocking check",
        )
        yield svc, agent, catcher, tenant, exempt
    finally:
        tenant.close()
        catcher.close()
        agent.stop()
        svc.stop()


def add_client(svc, *args: str) -> dict:
    return svc.cli_json("oidc-client", "add", *args)


def device_sign_in(svc, agent, authorize_url: str) -> httpx.Response:
    """Play the browser: authorize, the login page's challenge, the agent's answer, continue."""
    web = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=15)
    r = web.get(authorize_url)
    assert r.status_code == 303, r.text
    txn = r.headers["location"].rsplit("/", 1)[-1]
    challenge = web.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answer = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
        timeout=15,
    ).json()["response"]
    status = web.post(f"/login/{txn}/response", content=answer).json()
    assert status["status"] == "verified", status
    return web.get(f"/login/{txn}/continue")


def test_authlib_client_code_flow(world):
    svc, agent, catcher, _, _ = world
    redirect_uri = catcher.url + "/authlib/callback"
    added = add_client(svc, "--name", "Authlib app", "--redirect-uri", redirect_uri)
    disc = httpx.get(svc.url + "/oidc/.well-known/openid-configuration").json()
    session = OAuth2Session(
        added["client_id"],
        added["client_secret"],
        scope="openid email profile",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = "v" * 20 + "-authlib-pkce-verifier-0123456789"
    nonce = "authlib-nonce"
    url, state = session.create_authorization_url(
        disc["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    done = device_sign_in(svc, agent, url)
    assert done.status_code == 303, done.text
    callback = done.headers["location"]
    assert callback.startswith(redirect_uri + "?") and query_of(callback)["state"] == state
    token = session.fetch_token(
        disc["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    jwks = JsonWebKey.import_key_set(httpx.get(disc["jwks_uri"]).json())
    claims = JsonWebToken(["RS256"]).decode(
        token["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": disc["issuer"]}},
        claims_params={
            "nonce": nonce,
            "client_id": added["client_id"],
            "access_token": token["access_token"],
        },
    )
    claims.validate(leeway=5)  # iss, aud, exp, iat, nonce, at_hash
    assert claims["acr"] == "possessionorinherence" and claims["amr"] == ["swk"]
    assert claims["email"] == USER
    info = session.get(disc["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"] and info["preferred_username"] == USER
    # The same code again: refused, and the access token it issued stops working.
    again = httpx.post(
        disc["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query_of(callback)["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(added["client_id"], added["client_secret"]),
    )
    assert again.status_code == 400 and again.json()["code"] == "oidc_code_reused"
    assert session.get(disc["userinfo_endpoint"]).status_code == 401


@pytest.fixture(scope="session")
def node_oidc() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the openid-client interop test")
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


def _node(node_dir: Path, *args: str) -> dict:
    out = subprocess.run(
        ["node", "rp.mjs", *args], cwd=node_dir, capture_output=True, text=True, timeout=60
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and "error" not in data, (data, out.stderr)
    return data


def test_openid_client_code_flow(world, node_oidc):
    svc, agent, catcher, _, _ = world
    redirect_uri = catcher.url + "/node/callback"
    added = add_client(svc, "--name", "openid-client app", "--redirect-uri", redirect_uri)
    issuer = svc.url + "/oidc"
    creds = (issuer, added["client_id"], added["client_secret"])
    started = _node(node_oidc, "start", *creds, redirect_uri)
    done = device_sign_in(svc, agent, started["url"])
    assert done.status_code == 303, done.text
    finished = _node(
        node_oidc,
        "finish",
        *creds,
        done.headers["location"],
        started["verifier"],
        started["state"],
        started["nonce"],
    )
    claims = finished["claims"]
    assert claims["iss"] == issuer and claims["aud"] == added["client_id"]
    assert claims["nonce"] == started["nonce"] and claims["amr"] == ["swk"]
    assert finished["userinfo"]["sub"] == claims["sub"]
    assert finished["userinfo"]["email"] == USER


def test_posture_block_refuses_the_sign_in(world):
    svc, agent, catcher, _, exempt = world
    redirect_uri = catcher.url + "/posture/callback"
    added = add_client(
        svc, "--name", "Posture app", "--redirect-uri", redirect_uri, "--auth-method", "none"
    )
    svc.cli("exemptions", "remove", str(exempt["id"]), "--reason", "posture test")
    try:
        url = (
            f"/oidc/authorize?client_id={added['client_id']}&response_type=code&scope=openid"
            f"&redirect_uri={redirect_uri}&state=st&code_challenge={'A' * 43}"
            "&code_challenge_method=S256"
        )
        page = device_sign_in(svc, agent, url)
        assert page.status_code == 403  # the posture page: nothing issued
        assert "system-disk-encrypted" in page.text and "code=" not in page.headers.get(
            "location", ""
        )
        assert not [h for h in catcher.hits if h["path"] == "/posture/callback"]
    finally:
        world_exempt = svc.cli_json(
            "exemptions", "add", "--check", "*", "--user", USER, "--days", "1", "--reason", "again"
        )
        exempt["id"] = world_exempt["id"]


@pytest.mark.browser
def test_chromium_code_flow_and_eam_post(world, artifacts):
    if not browser.available():
        pytest.skip("Debian chromium is not installed")
    svc, agent, catcher, tenant, _ = world
    app_cb = catcher.url + "/chromium/callback"
    app = add_client(
        svc, "--name", "Chromium app", "--redirect-uri", app_cb, "--auth-method", "none"
    )
    eam_cb = catcher.url + "/common/federation/externalauthprovider"
    eam = add_client(
        svc,
        "--name",
        "Microsoft Entra ID",
        "--mode",
        "factor",
        "--redirect-uri",
        eam_cb,
        "--auth-method",
        "none",
        "--eam-tenant-id",
        tenant.tid,
        "--eam-jwks-url",
        tenant.jwks_url,
        "--eam-user-match",
        "external_id_then_username",
    )
    hint = tenant.hint(
        aud=eam["client_id"], sub="pairwise-chromium", oid="oid-not-synced", preferred_username=USER
    )
    fields = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "client_id": eam["client_id"],
        "redirect_uri": eam_cb,
        "nonce": "chromium-nonce",
        "state": "chromium-state",
        "claims": '{"id_token":{"acr":{"essential":true}}}',
        "id_token_hint": hint,
    }
    inputs = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    catcher.start_page = (
        f'<!doctype html><form id=f method=post action="{svc.url}/oidc/authorize">{inputs}'
        "<button id=go>go</button></form>"
    )
    with browser.chromium() as b:
        page = b.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The code flow: the page finds the agent, the device answers, back at the app.
        before = len(catcher.hits)
        page.goto(
            f"{svc.url}/oidc/authorize?client_id={app['client_id']}&response_type=code"
            f"&scope=openid&redirect_uri={app_cb}&state=cs&nonce=cn"
            f"&code_challenge={'B' * 43}&code_challenge_method=S256"
        )
        page.wait_for_selector("#done", timeout=30000)
        (hit,) = [h for h in catcher.hits[before:] if h["path"] == "/chromium/callback"]
        assert hit["query"]["state"] == "cs"
        assert len(hit["query"]["code"]) >= 43
        # The EAM flow: Entra's form POST to authorize, the device check, the id_token posted back.
        before = len(catcher.hits)
        page.goto(catcher.url + "/start-eam")
        page.click("#go")
        page.wait_for_selector("#done", timeout=30000)
        page.screenshot(path=str(artifacts / "oidc-eam-done.png"))
        (hit,) = [
            h
            for h in catcher.hits[before:]
            if h["path"] == "/common/federation/externalauthprovider"
        ]
        assert hit["method"] == "POST"
        assert hit["form"]["state"] == "chromium-state"
        jwks = httpx.get(svc.url + "/oidc/jwks").json()
        claims = verify_rs256_with_x5c(hit["form"]["id_token"], jwks)
        assert claims["sub"] == "pairwise-chromium" and claims["nonce"] == "chromium-nonce"
        assert claims["amr"] == ["swk"] and claims["acr"] == "possessionorinherence"
        assert errors == []
