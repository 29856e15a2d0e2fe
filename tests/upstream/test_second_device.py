"""Re-verification before a second device's trusted-device approval (``second_device``).

In process, through the real login and approve routes, with panva's oidc-provider
as the upstream IdP: a second device of Vera's waits for approval (its sign-in
denied ``device_pending``, as the answer of a pending device leaves it); the
trusted device's code is known. Under a window with ``second_device`` the code
is refused ``upstream_required`` (audited, nothing else written) until an
upstream sign-in in this sign-in proves Vera; somebody else's upstream sign-in
does not count; without the flag the code approves as before.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from idp_service.app import create_app
from idp_service.devices import approve
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.platform.config import Settings
from idp_service.platform.models import AuditEvent, Device, LoginTransaction
from idp_service.upstream import reauth
from tests.admin_helpers import make_device, make_user
from tests.upstream.support import NodeOp, idp_file
from tests.upstream.test_console_upstream import _provider_sign_in

PUBLIC = "http://127.0.0.1:8000"
CODE = "ABCD-EFGH"


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    provider = NodeOp(tmp_path_factory.mktemp("op"), PUBLIC + "/upstream/callback")
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def world(migrated_url, tmp_path, op):
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": migrated_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": PUBLIC,
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
                "DEVICETRUST_UPSTREAM_IDPS": str(idp_file(tmp_path, op)),
            }
        )
    )
    service = app.extensions["devicetrust"]
    with service.db.session() as s:
        vera = make_user(s, "vera@example.com")
        make_user(s, "bob@example.com")
        voucher = make_device(s, vera, state="trusted")
        pending = make_device(s, vera, state="pending")
        req = approve.open_request(service, s, pending)
        s.execute(
            update(ApprovalNotice)
            .where(ApprovalNotice.request_id == req.id, ApprovalNotice.device_id == voucher.id)
            .values(code_mac=approve.code_mac(approve.load_key(service), CODE))
        )
        ids = {"vera": vera.id, "pending": pending.id, "request": req.id}
    client = app.test_client()
    start = client.get("/login", follow_redirects=False)
    assert start.status_code == 303
    txn = start.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    with service.db.session() as s:  # what the pending device's answer leaves behind
        s.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id == txn)
            .values(status="denied", error_code="device_pending", device_id=ids["pending"])
        )
    try:
        yield service, client, txn, ids
    finally:
        service.db.dispose()


def _submit(client, txn):
    page = client.get(f"/login/{txn}/approve")
    assert page.status_code == 200
    with client.session_transaction() as sess:
        csrf = sess["login_approve_csrf"]
    return page, client.post(f"/login/{txn}/approve", data={"csrf": csrf, "code": CODE})


def _upstream(client, op, txn, login):
    to_provider = client.get(f"/upstream/corp/start?txn={txn}&purpose=approve")
    assert to_provider.status_code == 303, to_provider.data
    parts = urlsplit(_provider_sign_in(op, to_provider.headers["Location"], login))
    back = client.get(f"{parts.path}?{parts.query}")
    assert back.status_code == 303 and back.headers["Location"] == f"/login/{txn}/approve"


def _state(service, ids):
    with service.db.session() as s:
        device = s.get(Device, ids["pending"]).state
        attempts = s.get(ApprovalRequest, ids["request"]).attempts
        events = s.execute(
            select(AuditEvent.outcome, AuditEvent.code).where(
                AuditEvent.action == "approval.upstream"
            )
        ).all()
    return device, attempts, events


def _policy(service, *, second_device):
    with service.db.session() as s:
        reauth.set_policy(
            s, "30d", required=False, group=None, actor="test", second_device=second_device
        )


def test_the_code_waits_for_the_owners_upstream_sign_in(world, op):
    service, client, txn, ids = world
    _policy(service, second_device=True)
    page, refused = _submit(client, txn)
    text = page.get_data(as_text=True)
    assert 'id="approve-upstream-corp"' in text and 'id="approval-code"' not in text
    assert "purpose=approve" in text
    assert refused.status_code == 403
    assert 'id="upstream-required"' in refused.get_data(as_text=True)
    assert _state(service, ids) == ("pending", 0, [("denied", "upstream_required")])

    _upstream(client, op, txn, "bob@example.com")  # somebody else: does not count
    _, refused = _submit(client, txn)
    assert refused.status_code == 403
    assert _state(service, ids)[:2] == ("pending", 0)

    _upstream(client, op, txn, "vera@example.com")
    page, done = _submit(client, txn)
    assert 'id="approval-code"' in page.get_data(as_text=True)
    assert done.status_code == 303 and done.headers["Location"] == f"/login/{txn}"
    assert _state(service, ids)[0] == "trusted"


@pytest.mark.parametrize("policy", [None, "no_flag"])
def test_without_the_flag_the_code_approves_as_before(world, policy):
    service, client, txn, ids = world
    if policy == "no_flag":
        _policy(service, second_device=False)
    page, done = _submit(client, txn)
    assert 'id="approval-code"' in page.get_data(as_text=True)
    assert done.status_code == 303 and done.headers["Location"] == f"/login/{txn}"
    assert _state(service, ids) == ("trusted", 1, [])


def test_the_approve_sign_in_needs_a_sign_in_waiting_for_approval(world, op):
    service, client, txn, ids = world
    with service.db.session() as s:
        s.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id == txn)
            .values(status="denied", error_code="device_revoked")
        )
    resp = client.get(f"/upstream/corp/start?txn={txn}&purpose=approve")
    assert resp.status_code == 409 and b"login_closed" in resp.data
