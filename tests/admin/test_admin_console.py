"""The admin console in process, on SQLite and PostgreSQL: sign-in, CSRF, bootstrap, pages, actions.

The real sign-in with an agent and Chromium is in ``test_admin_browser.py``.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from idp_service.admin import bootstrap
from idp_service.admin.tables import AdminBootstrapToken
from idp_service.platform.models import AuditEvent, Device, LoginTransaction, User, utcnow
from posture_checks.evaluator import Status
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user

PAGES = [
    "/admin/",
    "/admin/devices",
    "/admin/pending",
    "/admin/users",
    "/admin/groups",
    "/admin/sps",
    "/admin/checks",
    "/admin/audit",
    "/admin/settings",
]


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def world(db):
    """alice (admin, with a trusted device), bob (not admin) with a pending and a trusted device."""
    with db.session() as s:
        alice, bob = make_user(s, "alice@example.com"), make_user(s, "bob@example.com")
        make_admin_group(s, alice)
        out = {
            "alice": alice.id,
            "bob": bob.id,
            "alice_laptop": make_device(s, alice, state="trusted", hostname="alice-mbp").id,
            "bob_pending": make_device(s, bob, state="pending", hostname="bob-new").id,
            "bob_trusted": make_device(s, bob, state="trusted", hostname="bob-old").id,
        }
    return out


def _events(db, action: str) -> list[AuditEvent]:
    with db.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _state(db, device_id: str) -> str:
    with db.session() as s:
        return s.get(Device, device_id).state


def _bootstrap_signin(app, db):
    client = app.test_client()
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    return client, token


def _verified_txn(app, db, client, user_id: str, device_id: str) -> str:
    """A verified ``admin`` login transaction owned by ``client`` (what the login page yields)."""
    with db.session() as s:
        txn = LoginTransaction(
            id=f"t{utcnow().timestamp():.6f}".replace(".", ""),
            status="verified",
            user_id=user_id,
            device_id=device_id,
            context={"kind": "admin"},
            expires_at=utcnow() + dt.timedelta(minutes=5),
            verified_at=utcnow(),
        )
        s.add(txn)
    with client.session_transaction() as sess:
        sess["login_txns"] = [txn.id]
    return txn.id


def test_signed_out_console_redirects_and_refuses(app, world):
    client = app.test_client()
    for path in PAGES:
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["Location"] == "/admin/signin", path
    assert client.get("/admin/signin").status_code == 200
    # A POST with this browser's CSRF token but no session: 401, nothing done.
    csrf = csrf_of(client.get("/admin/signin").get_data(as_text=True))
    resp = client.post(
        f"/admin/devices/{world['bob_pending']}/action",
        data={"csrf": csrf, "action": "approve", "reason": "x"},
    )
    assert resp.status_code == 401


def test_bootstrap_token_opens_one_session_once(app, db, world):
    client, token = _bootstrap_signin(app, db)
    for path in PAGES:
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["Cache-Control"] == "no-store"
    other = app.test_client()
    csrf = csrf_of(other.get("/admin/bootstrap").get_data(as_text=True))
    resp = other.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 403
    assert other.get("/admin/").status_code == 303
    outcomes = sorted(e.outcome for e in _events(db, "admin.bootstrap"))
    assert outcomes == ["denied", "ok"]
    assert len(_events(db, "admin.bootstrap_token")) == 1
    with db.session() as s:  # only the hash is kept
        assert s.scalar(select(func.count()).select_from(AdminBootstrapToken)) == 1
        assert s.scalar(select(AdminBootstrapToken.token_hash)) != token


def test_expired_bootstrap_token_is_refused(app, db):
    with db.session() as s:
        token, row = bootstrap.issue(s, actor="test")
        row.expires_at = utcnow() - dt.timedelta(seconds=1)
    client = app.test_client()
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 403
    assert client.post("/admin/bootstrap", data={"token": "", "csrf": csrf}).status_code == 403


def test_posts_without_csrf_are_refused_and_only_audited(app, db, world):
    client, _ = _bootstrap_signin(app, db)
    before = len(_events(db, "device.approve"))
    target = f"/admin/devices/{world['bob_pending']}/action"
    for data in (
        {"action": "approve", "reason": "r"},
        {"action": "approve", "reason": "r", "csrf": "x" * 43},
    ):
        resp = client.post(target, data=data)
        assert resp.status_code == 403
        assert b"csrf_invalid" in resp.data
    # A foreign Origin with the right token is refused too.
    csrf = csrf_of(client.get("/admin/pending").get_data(as_text=True))
    resp = client.post(
        target,
        data={"action": "approve", "reason": "r", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert resp.status_code == 403
    assert _state(db, world["bob_pending"]) == "pending"
    assert len(_events(db, "device.approve")) == before
    assert len(_events(db, "admin.csrf")) == 3


def test_actions_need_a_reason_and_are_audited(app, db, world):
    client, _ = _bootstrap_signin(app, db)
    csrf = csrf_of(client.get("/admin/pending").get_data(as_text=True))
    target = f"/admin/devices/{world['bob_pending']}/action"
    resp = client.post(target, data={"csrf": csrf, "action": "approve", "reason": " "})
    assert resp.status_code == 400 and b"reason_required" in resp.data
    resp = client.post(target, data={"csrf": csrf, "action": "explode", "reason": "r"})
    assert resp.status_code == 400 and b"bad_action" in resp.data
    resp = client.post(target, data={"csrf": csrf, "action": "deny", "reason": "r", "back": "x"})
    assert resp.status_code == 303 and _state(db, world["bob_pending"]) == "denied"
    resp = client.post(target, data={"csrf": csrf, "action": "deny", "reason": "again"})
    assert resp.status_code == 409 and b"bad_transition" in resp.data
    resp = client.post(target, data={"csrf": csrf, "action": "approve", "reason": "ok now"})
    assert _state(db, world["bob_pending"]) == "trusted"
    resp = client.post(
        target,
        data={"csrf": csrf, "action": "change_owner", "user": "alice@example.com", "reason": "r"},
    )
    assert resp.status_code == 303
    with db.session() as s:
        assert s.get(Device, world["bob_pending"]).user_id == world["alice"]
    resp = client.post(target, data={"csrf": csrf, "action": "delete", "reason": "sold"})
    assert resp.status_code == 303
    with db.session() as s:
        assert s.get(Device, world["bob_pending"]) is None
    actions = [e.action for e in _events(db, "device.approve") + _events(db, "device.delete")]
    assert actions == ["device.approve", "device.delete"]
    assert _events(db, "device.approve")[0].actor == "admin:bootstrap"
    assert {e.code for e in _events(db, "admin.request")} == {
        "reason_required",
        "bad_action",
        "bad_transition",
    }
    # The device's audit trail shows on the page of a remaining device, and the log filters.
    page = client.get("/admin/audit?action=device.delete").get_data(as_text=True)
    assert "sold" in page


def test_bad_query_parameters_are_4xx(app, db, world):
    client, _ = _bootstrap_signin(app, db)
    for path in (
        "/admin/devices?after=nonsense",
        "/admin/devices?state=melted",
        "/admin/devices?q=" + "x" * 300,
        "/admin/audit?before=abc",
        "/admin/devices?check=disk&status=broken",
        "/admin/devices?status=FAIL",
        "/admin/devices?check=" + "c" * 200,
    ):
        assert client.get(path).status_code == 400, path
    assert client.get("/admin/devices/" + "x" * 80).status_code == 404
    assert client.get("/admin/devices/nope").status_code == 404


def test_search_and_paging(app, db, world):
    client, _ = _bootstrap_signin(app, db)
    page = client.get("/admin/devices?q=bob").get_data(as_text=True)
    assert "bob-new" in page and "bob-old" in page and "alice-mbp" not in page
    page = client.get("/admin/devices?q=ALICE-").get_data(as_text=True)
    assert "alice-mbp" in page and "bob-new" not in page
    page = client.get(f"/admin/devices?q={world['bob_trusted']}").get_data(as_text=True)
    assert "bob-old" in page and "bob-new" not in page
    page = client.get("/admin/devices?state=pending").get_data(as_text=True)
    assert "bob-new" in page and "bob-old" not in page
    with db.session() as s:
        from idp_service.platform.models import User

        bob = s.get(User, world["bob"])
        for i in range(60):
            make_device(s, bob, state="trusted", hostname=f"fleet-{i:03}")
    first = client.get("/admin/devices?q=fleet-").get_data(as_text=True)
    assert first.count("fleet-") >= 50 and 'id="next"' in first
    import re

    nxt = re.search(r'id="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(nxt).get_data(as_text=True)
    shown = set(re.findall(r"fleet-\d{3}", first)) | set(re.findall(r"fleet-\d{3}", second))
    assert len(shown) == 60 and 'id="next"' not in second


def test_device_login_opens_a_session_only_for_admins(app, db, world):
    client = app.test_client()
    txn = _verified_txn(app, db, client, world["alice"], world["alice_laptop"])
    resp = client.get(f"/login/{txn}/continue")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    assert client.get("/admin/devices").status_code == 200
    # Revoking the admin's own device ends the session at the next request.
    with db.session() as s:
        s.get(Device, world["alice_laptop"]).state = "revoked"
    assert client.get("/admin/devices").status_code == 303

    other = app.test_client()
    txn = _verified_txn(app, db, other, world["bob"], world["bob_trusted"])
    resp = other.get(f"/login/{txn}/continue")
    assert resp.status_code == 403 and b"not_admin" in resp.data
    assert other.get("/admin/").status_code == 303
    # A transaction completes once.
    assert other.get(f"/login/{txn}/continue").status_code in (403, 404)
    codes = {(e.outcome, e.code) for e in _events(db, "admin.login")}
    assert ("ok", None) in codes and ("denied", "not_admin") in codes


def test_detail_overview_exemptions_and_settings(app, db, world):
    from idp_service.posture.tables import (
        CheckResultHistory,
        CheckResultRow,
        DeviceFacts,
        ExemptionRow,
    )

    device_id = world["bob_trusted"]
    with db.session() as s:
        s.add(DeviceFacts(device_id=device_id, report_seq=3, facts={"os": {"name": "Debian"}}))
        s.add(
            CheckResultRow(
                device_id=device_id,
                check_id="disk-encrypted",
                status=Status.FAIL.value,  # real reports: tests/admin/test_admin_posture_views.py
                reason="root is not encrypted",
                evaluated_at=utcnow(),
                first_failed_at=utcnow(),
            )
        )
        s.add(
            CheckResultHistory(device_id=device_id, check_id="disk-encrypted", status=Status.FAIL)
        )
    client, _ = _bootstrap_signin(app, db)
    page = client.get(f"/admin/devices/{device_id}").get_data(as_text=True)
    assert "Debian" in page and "root is not encrypted" in page and "Report #3" in page
    page = client.get("/admin/").get_data(as_text=True)
    assert "disk-encrypted" in page and 'id="count-pending">1<' in page

    csrf = csrf_of(client.get("/admin/checks").get_data(as_text=True))
    form = {"csrf": csrf, "check_id": "disk-encrypted", "scope": "device", "subject": device_id}
    resp = client.post("/admin/exemptions", data={**form, "days": "7", "reason": "waiting on IT"})
    assert resp.status_code == 303
    resp = client.post("/admin/exemptions", data={**form, "days": "0", "reason": "x"})
    assert resp.status_code == 400 and b"bad_exemption" in resp.data
    resp = client.post(
        "/admin/exemptions", data={**form, "scope": "planet", "days": "3", "reason": "x"}
    )
    assert resp.status_code == 400
    with db.session() as s:
        rows = list(s.scalars(select(ExemptionRow)))
    assert len(rows) == 1 and rows[0].created_by == "admin:bootstrap"
    checks_page = client.get("/admin/checks").get_data(as_text=True)
    assert "waiting on IT" in checks_page and "(in 7 d)" in checks_page
    resp = client.post(f"/admin/exemptions/{rows[0].id}/remove", data={"csrf": csrf, "reason": ""})
    assert resp.status_code == 400
    resp = client.post(
        f"/admin/exemptions/{rows[0].id}/remove", data={"csrf": csrf, "reason": "ok"}
    )
    assert resp.status_code == 303
    assert len(_events(db, "exemption.add")) == 1 and len(_events(db, "exemption.remove")) == 1

    page = client.get("/admin/settings").get_data(as_text=True)
    assert "admin_group" in page and "devicetrust-admins" in page
    key = app.config["SECRET_KEY"]
    assert (key.hex() if isinstance(key, bytes) else key) not in page
    assert "(from the database)" in page
    # Durations read as people write them, not as Python's timedelta text.
    assert "<dt>stale_after</dt><dd><code>30 d</code></dd>" in page
    assert "<dt>admin_session_ttl</dt><dd><code>8 h</code></dd>" in page
    assert "<dt>enroll_code_ttl</dt><dd><code>24 h</code></dd>" in page


def test_pending_page_detail_and_api_show_code_requests(app, db, world):
    from sqlalchemy import event

    from idp_service.api import schema as S
    from idp_service.api.devices import DEVICE, DEVICE_DETAIL
    from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
    from tests.admin_helpers import make_device
    from tests.api_helpers import make_token

    now = utcnow()
    with db.session() as s:
        bob = world["bob"]
        owner = s.get(User, bob)
        stale = make_device(s, owner, state="pending", hostname="bob-expired")
        burnt = make_device(s, owner, state="pending", hostname="bob-burnt")
        plain = make_device(s, owner, state="pending", hostname="bob-no-code")
        ids = {"open": world["bob_pending"], "expired": stale.id, "exhausted": burnt.id}
        for status, device_id, expires, attempts in (
            ("open", ids["open"], now + dt.timedelta(minutes=7), 1),
            ("open", ids["expired"], now - dt.timedelta(minutes=1), 2),
            ("exhausted", ids["exhausted"], now - dt.timedelta(minutes=3), 5),
        ):
            req = ApprovalRequest(
                id=f"req-{status}-{device_id[:8]}",
                device_id=device_id,
                user_id=bob,
                status=status,
                attempts=attempts,
                max_attempts=5,
                expires_at=expires,
                created_at=now - dt.timedelta(minutes=10),
            )
            s.add(req)
            s.flush()
            s.add(
                ApprovalNotice(
                    request_id=req.id,
                    device_id=world["bob_trusted"],
                    code_mac="ab" * 32,
                    sealed=b"sealed-notice",
                )
            )
    expires = (now + dt.timedelta(minutes=7)).strftime("%Y-%m-%d %H:%M:%S UTC")
    client, _ = _bootstrap_signin(app, db)

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        page = client.get("/admin/pending").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert sum("approval_requests" in st for st in statements) == 1  # one query for the page
    assert not any("approval_notices" in st for st in statements)  # codes are not even read

    def cell(device_id: str) -> str:
        found = re.search(rf'id="approval-{device_id}">(.*?)</td>', page, re.S)
        assert found, device_id
        return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())

    assert cell(ids["open"]) == f"code open expires {expires} (in 7 min), 1 of 5 attempts used"
    assert cell(ids["expired"]).startswith("code expired since ")
    assert re.search(r"\((\d+ s|1 min) ago\)", cell(ids["expired"]))
    assert cell(ids["expired"]).endswith("2 of 5 attempts used")
    assert cell(ids["exhausted"]) == "attempts used up 5 of 5 attempts used"
    assert cell(plain.id) == "none"
    assert "<th>Code request</th>" in page

    detail = client.get(f"/admin/devices/{ids['open']}").get_data(as_text=True)
    shown = re.search(r'<dd id="approval-request">(.*?)</dd>', detail, re.S).group(1)
    assert "code open" in shown and expires in shown and "1 of 5 attempts used" in shown
    assert 'id="approval-request"' not in client.get(
        f"/admin/devices/{world['alice_laptop']}"
    ).get_data(as_text=True)  # trusted, never asked for a code
    assert "none" in client.get(f"/admin/devices/{plain.id}").get_data(as_text=True)

    # The admin API shows the same, on the lists and the detail.
    token = make_token(db, "reader", "read")
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    items = api.get("/api/v1/approvals", headers=headers).json["items"]
    by_id = {d["id"]: d["approval_request"] for d in items}
    assert by_id[plain.id] is None
    assert by_id[ids["expired"]]["status"] == "expired"
    assert by_id[ids["exhausted"]]["status"] == "exhausted"
    full = api.get(f"/api/v1/devices/{ids['open']}", headers=headers).json
    S.validate(DEVICE_DETAIL, full)  # the OpenAPI document's schema, with a request in it
    for item in items:
        S.validate(DEVICE, item)
    request = full["device"]["approval_request"]
    assert set(request) == {
        "id",
        "status",
        "attempts",
        "max_attempts",
        "created_at",
        "expires_at",
        "closed_at",
    }
    assert (request["status"], request["attempts"], request["max_attempts"]) == ("open", 1, 5)
    assert dt.datetime.fromisoformat(request["expires_at"]) > now
    assert "ab" * 32 not in str(items) and "sealed" not in str(items)

    # An admin's decision closes the request; the page says so.
    csrf = csrf_of(page)
    resp = client.post(
        f"/admin/devices/{ids['open']}/action",
        data={"action": "deny", "reason": "not his", "csrf": csrf},
    )
    assert resp.status_code == 303
    got = api.get(f"/api/v1/devices/{ids['open']}", headers=headers).json["device"]
    assert got["approval_request"]["status"] == "closed" and got["approval_request"]["closed_at"]
    detail = client.get(f"/admin/devices/{ids['open']}").get_data(as_text=True)
    assert "closed" in re.search(r'<dd id="approval-request">(.*?)</dd>', detail, re.S).group(1)
