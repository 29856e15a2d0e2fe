"""The admin API's bearer check (``_authenticate``, ``_unauthorized`` in idp_service/api/core.py)
in process, on SQLite: which Authorization headers are a token, the exact 401 and 403 a
client gets (code, message, ``WWW-Authenticate``), and who the audit log names.

Written for the mutation run over those two functions: every refusal is checked by its
status, code, message and challenge header, since a client (and the OpenAPI document)
relies on all four. PostgreSQL runs the same check in tests/api/test_admin_api.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from tests.admin_helpers import make_user
from tests.api_helpers import make_token

MISSING = "send Authorization: Bearer <token> (devicetrust api-token)"
CHALLENGE = 'Bearer realm="devicetrust"'
INVALID = 'Bearer realm="devicetrust", error="invalid_token"'
SCOPE = 'Bearer realm="devicetrust", error="insufficient_scope", scope="write"'


@pytest.fixture
def api(sqlite_service_ctx):
    db = sqlite_service_ctx.extensions["devicetrust"].db
    with db.session() as s:
        user_id = make_user(s, "carol@example.com").id
    return {
        "client": sqlite_service_ctx.test_client(),
        "db": db,
        "user": user_id,
        "read": make_token(db, "reader", "read"),
        "write": make_token(db, "writer", "write"),
    }


def _get(api, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return api["client"].get("/api/v1/users", headers=headers)


def _post(api, authorization: str):
    return api["client"].post(
        f"/api/v1/users/{api['user']}/enrollment-codes",
        headers={"Authorization": authorization},
        json={"ttl_seconds": 600},
    )


def _last(db) -> AuditEvent:
    with db.session() as s:
        return s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()


def _refused(resp, status: int, code: str, message: str, challenge: str) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["message"] == message
    assert resp.headers["WWW-Authenticate"] == challenge
    assert "items" not in resp.json


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic {read}",
        "Token {read}",
        "{read}",
        "Bearer\t{read}",
    ],
)
def test_no_bearer_token_is_401_without_an_error_code(api, authorization):
    if authorization is not None:
        authorization = authorization.format(read=api["read"])
    resp = _get(api, authorization)
    _refused(resp, 401, "unauthorized", MISSING, CHALLENGE)
    event = _last(api["db"])
    assert (event.action, event.outcome, event.code, event.actor) == (
        "api.auth",
        "denied",
        "unauthorized",
        None,
    )
    assert event.details["status"] == 401


@pytest.mark.parametrize("token", ["dtapi_not-a-real-token", "x", "{read}x", "{read_upper}"])
def test_an_unknown_token_is_401_invalid_token(api, token):
    token = token.format(read=api["read"], read_upper=api["read"].upper())
    resp = _get(api, f"Bearer {token}")
    _refused(resp, 401, "unauthorized", "unknown or revoked token", INVALID)
    event = _last(api["db"])
    assert (event.action, event.outcome, event.actor) == ("api.auth", "denied", None)
    assert token not in str(event.details)


@pytest.mark.parametrize(
    "authorization", ["Bearer {t}", "bearer {t}", "BEARER {t}", "BeArEr {t}", "Bearer   {t}  "]
)
def test_the_scheme_in_any_case_and_spaces_around_the_token(api, authorization):
    resp = _get(api, authorization.format(t=api["read"]))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [u["user_name"] for u in resp.json["items"]] == ["carol@example.com"]
    assert "WWW-Authenticate" not in resp.headers
    event = _last(api["db"])
    assert (event.action, event.outcome, event.actor) == ("api.request", "ok", "api:reader")
    assert event.details["token"] == "reader"


def test_a_read_token_cannot_write_and_is_named_in_the_audit(api):
    resp = _post(api, f"Bearer {api['read']}")
    _refused(resp, 403, "insufficient_scope", "this needs a token with the write scope", SCOPE)
    event = _last(api["db"])
    assert (event.action, event.outcome, event.code, event.actor) == (
        "api.request",
        "denied",
        "insufficient_scope",
        "api:reader",
    )
    assert event.details["token"] == "reader" and event.details["status"] == 403


def test_a_write_token_reads_and_writes(api):
    read = _get(api, f"Bearer {api['write']}")
    assert read.status_code == 200 and "WWW-Authenticate" not in read.headers
    assert _last(api["db"]).actor == "api:writer"
    made = _post(api, f"Bearer {api['write']}")
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.json["user_id"] == api["user"]
    event = _last(api["db"])
    assert (event.action, event.outcome, event.actor) == ("api.request", "ok", "api:writer")
