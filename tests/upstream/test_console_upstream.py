"""The admin console's sign-in through the upstream IdP, still behind device trust.

An in-process service configured with oidc-provider (a real process) as its
console IdP. The browser is Flask's test client for our service and ``requests``
at the provider; the provider's redirect back to our callback is delivered to
the test client. The device check itself is the login page's (tested elsewhere):
here the transaction is marked verified by the device, as the page would leave it.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from sqlalchemy import update

from idp_service.app import create_app
from idp_service.platform.config import Settings
from idp_service.platform.models import LoginTransaction, utcnow
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user
from tests.upstream.support import NodeOp, idp_file

PUBLIC = "http://127.0.0.1:8000"


@pytest.fixture
def console(migrated_url, tmp_path):
    op = NodeOp(tmp_path, PUBLIC + "/upstream/callback")
    path = idp_file(tmp_path, op, console=True)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": migrated_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": PUBLIC,
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
                "DEVICETRUST_UPSTREAM_IDPS": str(path),
            }
        )
    )
    db = app.extensions["devicetrust"].db
    with db.session() as s:
        alice = make_user(s, "alice@example.com")
        make_user(s, "bob@example.com")
        make_admin_group(s, alice)
        world = {"alice": alice.id, "laptop": make_device(s, alice, state="trusted").id}
    try:
        yield app, db, op, world
    finally:
        db.dispose()
        op.stop()


def _provider_sign_in(op, url: str, login: str) -> str:
    http = requests.Session()
    for _ in range(12):
        if url.startswith(PUBLIC + "/upstream/callback"):
            return url
        resp = http.get(url, allow_redirects=False, timeout=10)
        if resp.status_code in (302, 303):
            url = urljoin(url, resp.headers["Location"])
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', resp.text)
        resp = http.post(
            urljoin(url, form.group(1)),
            data={"prompt": "login", "login": login, "password": "x"},
            allow_redirects=False,
            timeout=10,
        )
        url = urljoin(url, resp.headers["Location"])
    raise AssertionError("no callback")


def _device_verified(db, txn: str, world) -> None:
    with db.session() as s:
        s.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id == txn)
            .values(
                status="verified",
                user_id=world["alice"],
                device_id=world["laptop"],
                verified_at=utcnow(),
            )
        )


def _start(client):
    csrf = csrf_of(client.get("/admin/signin").get_data(as_text=True))
    resp = client.post("/admin/signin", data={"csrf": csrf})
    assert resp.status_code == 303
    location = resp.headers["Location"]
    assert location.startswith("/upstream/corp/start?txn=") and "purpose=admin" in location
    return location.split("txn=")[1].split("&")[0], location


@pytest.mark.parametrize("login", ["alice@example.com", "bob@example.com", None])
def test_console_needs_the_upstream_sign_in_of_the_device_owner(console, login):
    app, db, op, world = console
    client = app.test_client()
    txn, start = _start(client)
    if login is not None:
        to_provider = client.get(start)
        assert to_provider.status_code == 303
        callback = _provider_sign_in(op, to_provider.headers["Location"], login)
        parts = urlsplit(callback)
        back = client.get(f"{parts.path}?{parts.query}")
        assert back.status_code == 303 and back.headers["Location"] == f"/login/{txn}"
    _device_verified(db, txn, world)
    done = client.get(f"/login/{txn}/continue")
    if login == "alice@example.com":
        assert done.status_code == 303 and done.headers["Location"] == "/admin/"
        assert client.get("/admin/").status_code == 200
    else:  # no upstream sign-in, or one as somebody else than the device's owner
        assert done.status_code == 403 and b"upstream_required" in done.data
