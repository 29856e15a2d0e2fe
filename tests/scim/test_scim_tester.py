"""scim2-tester against the live service process over HTTP: every check must be SUCCESS."""

from __future__ import annotations

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.scim_helpers import start_scim_service


@pytest.fixture
def live(tmp_path, database_url):
    svc, token = start_scim_service(tmp_path, database_url)
    yield svc, token
    svc.stop()


def test_scim2_tester_reports_only_success(live):
    svc, token = live
    http = httpx2.Client(
        base_url=f"{svc.url}/scim/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    results = check_server(SyncSCIMClient(http))
    assert len(results) > 100  # discovery, CRUD and PATCH on Users and Groups all ran
    failures = [
        (r.status.name, r.title, r.description, r.reason)
        for r in results
        if r.status is not Status.SUCCESS
    ]
    assert failures == [], "\n".join(map(str, failures)) + "\n" + svc.log()[-4000:]
