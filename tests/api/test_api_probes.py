"""A valid admin API token sent to routes that do not exist leaves a trace: the first
probe per token per minute is audited, the rest of the minute's are not. In process,
on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from idp_service.platform.ratelimit_store import DatabaseStorage
from tests.api_helpers import make_token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(service_ctx):
    service = service_ctx.extensions["devicetrust"]
    clock = Clock()
    service.api_probe_marks = DatabaseStorage(engine=service.db.engine, clock=clock)
    return {
        "client": service_ctx.test_client(),
        "db": service.db,
        "clock": clock,
        "reader": make_token(service.db, "reader", "read"),
        "writer": make_token(service.db, "writer", "write"),
    }


def _probes(db) -> list[AuditEvent]:
    with db.session() as s:
        return list(
            s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "api.request", AuditEvent.outcome == "rejected")
                .order_by(AuditEvent.id)
            )
        )


def _send(api, method, path, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api["client"].open(f"/api/v1{path}", method=method, headers=headers)


def test_the_first_probe_per_token_per_minute_is_audited(api):
    first = _send(api, "GET", "/admin/secrets", api["reader"])
    assert first.status_code == 404 and first.json["error"]["code"] == "not_found"
    for n in range(30):  # a scan: the same minute, nothing more is written
        assert _send(api, "GET", f"/guess{n}", api["reader"]).status_code == 404
        assert _send(api, "DELETE", "/overview", api["reader"]).status_code == 405
    (event,) = _probes(api["db"])
    assert (event.actor, event.code) == ("api:reader", "not_found")
    assert event.details["path"] == "/api/v1/admin/secrets"
    assert event.details["status"] == 404 and event.details["undeclared"] is True
    assert api["reader"] not in str(event.details)  # the token's name, never the token

    # Another token has its own minute; its 405 says so.
    wrong_method = _send(api, "PUT", "/overview", api["writer"])
    assert wrong_method.status_code == 405
    events = _probes(api["db"])
    assert [(e.actor, e.code) for e in events[1:]] == [("api:writer", "method_not_allowed")]
    assert events[1].details["method"] == "PUT"

    api["clock"].now += 61  # the next minute: the next probe is on record again
    _send(api, "GET", "/guess-again", api["reader"])
    assert [e.details["path"] for e in _probes(api["db"])][-1] == "/api/v1/guess-again"
    assert len(_probes(api["db"])) == 3


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_an_unauthenticated_probe_is_not_an_api_request(api, token):
    assert _send(api, "GET", "/nowhere", token).status_code == 404
    assert _probes(api["db"]) == []


def test_declared_routes_are_audited_as_before(api):
    assert _send(api, "GET", "/overview", api["reader"]).status_code == 200
    assert _send(api, "GET", "/devices/nope", api["reader"]).status_code == 404
    assert _probes(api["db"])[0].code == "device_not_found"
