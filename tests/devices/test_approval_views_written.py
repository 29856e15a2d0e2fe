"""The console's and the admin API's view of a code request, fed by the real write path.

``tests/admin/test_admin_console.py`` checks the Pending page's "Code request" column,
the device page and the API's ``approval_request`` on rows it inserts itself; this
test gets the same views from what the service writes. A trusted agent A and a new
agent B for the same user, under ``trusted_device_approval``: B's registration opens
the request, B's browser burns one attempt with a wrong code, and then the Pending
page, the device page, ``/api/v1/approvals`` and ``/api/v1/devices/{id}`` must show
"open, 1 of 3 attempts used", with no code and no sealed notice in any of them. After
the right code, the same views show the request approved.
"""

from __future__ import annotations

import re

import httpx

from tests.admin_helpers import csrf_of
from tests.devices.test_approve_e2e import _codes, _login, _pair, _submit, _wrong, tda_service
from tests.procs import ServiceProc

__all__ = ["tda_service"]  # the fixture, imported for this module


def _console(svc: ServiceProc) -> httpx.Client:
    token = svc.cli_json("admin", "bootstrap")["token"]
    client = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    csrf = csrf_of(client.get("/admin/bootstrap").text)
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    return client


def _api(svc: ServiceProc) -> httpx.Client:
    token = svc.cli_json("api-token", "create", "views", "--scope", "read")["token"]
    return httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _cell(page: str, device_id: str) -> str:
    found = re.search(rf'id="approval-{device_id}">(.*?)</td>', page, re.S)
    assert found, f"no code-request cell for {device_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def test_views_of_a_code_request_show_what_the_service_wrote(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "olga@example.com")
    b_id = b.cli_json("id")["device_id"]
    b.start("--no-approvals")
    try:
        shown = _codes(a)
        assert len(shown) == 1
        browser, txn, status = _login(svc, b)
        assert status["code"] == "device_pending"
        wrong = _submit(browser, txn, _wrong(shown[0]["code"]))
        assert wrong.status_code == 403 and "2 attempts left" in wrong.text
        live_code = _codes(a)[0]["code"]

        console, api = _console(svc), _api(svc)
        pending = console.get("/admin/pending").text
        cell = _cell(pending, b_id)
        assert cell.startswith("code open expires ") and cell.endswith("1 of 3 attempts used")
        detail = console.get(f"/admin/devices/{b_id}").text
        shown_detail = re.search(r'<dd id="approval-request">(.*?)</dd>', detail, re.S)
        assert shown_detail and "code open" in shown_detail.group(1)
        assert "1 of 3 attempts used" in shown_detail.group(1)

        items = api.get("/approvals").json()["items"]
        listed = {d["id"]: d["approval_request"] for d in items}
        assert listed[b_id]["status"] == "open"
        full = api.get(f"/devices/{b_id}").json()["device"]["approval_request"]
        assert (full["status"], full["attempts"], full["max_attempts"]) == ("open", 1, 3)
        assert full["closed_at"] is None and full["id"] == shown[0]["request_id"]
        for text in (pending, detail, str(items), str(full)):
            for code in (shown[0]["code"], live_code):
                assert code not in text and code.replace("-", "") not in text

        done = _submit(browser, txn, live_code)
        assert done.status_code == 303
        after = api.get(f"/devices/{b_id}").json()["device"]
        assert after["state"] == "trusted"
        assert after["approval_request"]["status"] == "approved"
        assert after["approval_request"]["attempts"] == 2
        assert after["approval_request"]["closed_at"]
    finally:
        b.stop()
