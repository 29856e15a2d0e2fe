"""The upstream IdP for tests: panva's ``oidc-provider`` (pinned in node_op/package.json).

:class:`NodeOp` runs ``node_op/op.mjs`` on a loopback port; :func:`upstream_stack`
starts the real service configured with it as its upstream IdP. :func:`sign_in`
walks the provider's own login form with ``requests`` up to (not into) our
callback, so a test can deliver the answer as is, or altered. Needs ``node`` and
``npm``; the first run installs the lock file's packages with ``npm ci``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from joserfc.jwk import RSAKey
from sqlalchemy import create_engine, update

from idp_service.platform.models import User
from tests.procs import free_port, start_service, wait_http

NODE_DIR = Path(__file__).resolve().parent / "node_op"
CLIENT_ID = "devicetrust-test"
CLIENT_SECRET = "a-client-secret-only-these-tests-know-0123456789"


def node_ready() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the upstream IdP tests")
    if not (NODE_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


def signing_key(kid: str) -> dict:
    return RSAKey.generate_key(
        2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True
    ).as_dict(private=True)


class NodeOp:
    """oidc-provider on 127.0.0.1:``port``; restart with other keys to rotate them."""

    def __init__(self, tmp: Path, redirect_uri: str, *, kid: str = "key-1") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = redirect_uri
        self.proc: subprocess.Popen | None = None
        self.start(kid)

    def start(self, kid: str) -> None:
        self.kid = kid
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "jwks": {"keys": [signing_key(kid)]},
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [self.redirect_uri],
                }
            ],
        }
        path = self.tmp / f"op-{kid}.json"
        path.write_text(json.dumps(config))
        self.log_path = self.tmp / f"op-{kid}.log"
        self.proc = subprocess.Popen(
            ["node", "op.mjs", str(path)],
            cwd=node_ready(),
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_http(self.issuer + "/.well-known/openid-configuration", proc=None)

    def rotate(self, kid: str) -> None:
        """Restart the provider under a new signing key (the old one is no longer published)."""
        self.stop()
        self.start(kid)

    def tamper(self, **fault: object) -> None:
        """Alter the ID token of the next token response (see op.mjs)."""
        requests.post(self.issuer + "/__test/tamper", json=fault, timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def idp_file(tmp: Path, op: NodeOp, **extra: object) -> Path:
    lines = [
        "[[idp]]",
        'id = "corp"',
        'name = "Corp IdP"',
        f'issuer = "{op.issuer}"',
        f'client_id = "{CLIENT_ID}"',
        f'client_secret = "{CLIENT_SECRET}"',
        'claim = "email"',
        "jwks_min_refresh = 0",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = tmp / "upstream.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def upstream_stack(tmp: Path, database_url: str, *, agent_ports=None, **idp_extra):
    """The service with the provider as its upstream IdP: ``(svc, op)``."""
    port = free_port()
    # The service's URL is known only once it runs; the provider needs the callback first,
    # so the service takes a port chosen here.
    op = NodeOp(tmp, f"http://127.0.0.1:{port}/upstream/callback")
    path = idp_file(tmp, op, **idp_extra)
    try:
        svc = start_service(
            tmp,
            database_url,
            agent_ports=agent_ports,
            extra_env={"DEVICETRUST_UPSTREAM_IDPS": str(path)},
            port=port,
        )
    except Exception:
        op.stop()
        raise
    return svc, op


def set_active(svc, user_name: str, active: bool) -> None:
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(update(User).where(User.user_name == user_name).values(active=active))
    engine.dispose()


def start_login(http: requests.Session, svc) -> str:
    """A plain device check's login transaction for this client: its id."""
    resp = http.get(svc.url + "/login", allow_redirects=False, timeout=10)
    assert resp.status_code == 303
    return resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def sign_in(http: requests.Session, svc, op: NodeOp, txn: str, login: str) -> str:
    """Start the upstream sign-in for ``txn`` and sign in at the provider as ``login``.

    Returns the callback URL the provider sends the browser to (not yet followed).
    """
    resp = http.get(f"{svc.url}/upstream/corp/start?txn={txn}", allow_redirects=False, timeout=10)
    assert resp.status_code == 303, resp.text
    url = resp.headers["Location"]
    assert url.startswith(op.issuer + "/auth?")
    for _ in range(12):
        if url.startswith(svc.url + "/upstream/callback"):
            return url
        resp = http.get(url, allow_redirects=False, timeout=10)
        if resp.status_code in (302, 303):
            url = urljoin(url, resp.headers["Location"])
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', resp.text)
        assert form and 'name="login"' in resp.text, resp.text[:2000]
        resp = http.post(
            urljoin(url, form.group(1)),
            data={"prompt": "login", "login": login, "password": "any"},
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code in (302, 303), resp.text[:2000]
        url = urljoin(url, resp.headers["Location"])
    raise AssertionError("the provider never sent the browser back")
