"""/readyz follows the database (503 while PostgreSQL refuses connections, ready again
after, without a restart); the JSON log lines and the SCIM operation labels."""

from __future__ import annotations

import io
import json
import logging

import pytest

from idp_service.platform import logs
from idp_service.platform.config import Settings
from idp_service.web.observability import scim_operation
from tests.conftest import _pg_admin as _admin


@pytest.mark.postgres
def test_readyz_fails_while_the_database_is_unreachable_and_recovers(tmp_path, postgres_url):
    from idp_service.app import create_app

    name = postgres_url.rsplit("/", 1)[1]
    app = create_app(
        Settings.from_env(
            {"DEVICETRUST_DATABASE_URL": postgres_url, "DEVICETRUST_DATA_DIR": str(tmp_path)}
        )
    )
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    with _admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json["status"] == "unavailable"
        assert client.get("/healthz").status_code == 200  # the process itself is fine
    finally:
        with _admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert client.get("/readyz").status_code == 200
    app.extensions["devicetrust"].db.engine.dispose()


def test_a_log_line_is_one_json_object_with_the_request_id_and_extra_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("devicetrust.test")
    log.addHandler(handler)
    log.propagate = False
    try:
        token = logs.request_id.set("abc123def4567890")
        log.warning("sweep found %d devices", 3, extra={"job": "staleness"})
        logs.request_id.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "sweep found 3 devices" and first["job"] == "staleness"
    assert (first["level"], first["request_id"]) == ("WARNING", "abc123def4567890")
    assert second["request_id"] is None and "ValueError: boom" in second["exc"]


@pytest.mark.parametrize(
    ("method", "path", "op"),
    [
        ("POST", "/scim/v2/Users", "create"),
        ("GET", "/scim/v2/Users", "list"),
        ("GET", "/scim/v2/Users/abc", "get"),
        ("PUT", "/scim/v2/Groups/abc", "replace"),
        ("PATCH", "/scim/v2/Users/abc", "patch"),
        ("DELETE", "/scim/v2/Users/abc", "delete"),
        ("POST", "/scim/v2/Users/.search", "search"),
        ("POST", "/scim/v2/.search", "search"),
        ("POST", "/scim/v2/Bulk", "bulk"),
        ("GET", "/scim/v2/ServiceProviderConfig", "discovery"),
        ("GET", "/scim/v2/", "other"),
        ("OPTIONS", "/scim/v2/Users", "other"),
    ],
)
def test_scim_operations_come_from_a_closed_set(method, path, op):
    assert scim_operation(method, path) == op
