"""Hostile input to /scim/v2: every refusal is a SCIM error with a 4xx, never a 500,
writes nothing but its audit event. Live process for the fixed cases; hypothesis
in-process for untrusted bytes reaching the filter, PATCH and JSON parsers."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import Client

from idp_service import tokens
from idp_service.platform.db import Database, make_engine
from idp_service.platform.migrate import upgrade
from idp_service.platform.models import AuditEvent, User
from scim.app import ScimApplication
from tests.scim_helpers import (
    ERROR,
    GROUP,
    USER,
    assert_scim_error,
    patch,
    scim_client,
    start_scim_service,
    user_body,
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def live(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"scim-hostile-{request.param}")
    janitor = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'devicetrust.db'}"
    else:
        from pytest_postgresql.janitor import DatabaseJanitor

        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
        janitor = DatabaseJanitor(user=PG_USER, host=PG_HOST, port=PG_PORT, dbname=name)
        janitor.init()
        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    svc, token = start_scim_service(tmp, url)
    scim = scim_client(svc, token)
    uid = scim.post("/Users", json=user_body("victim@example.com")).json()["id"]
    yield svc, scim, uid
    svc.stop()
    if janitor is not None:
        janitor.drop()


def _count(svc, model):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(model)).scalar_one()
    finally:
        engine.dispose()


def _rejections(svc):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "scim.request", AuditEvent.outcome == "rejected")
            ).scalar_one()
    finally:
        engine.dispose()


def _deep(levels: int) -> bytes:
    return (
        b'{"schemas":["'
        + USER.encode()
        + b'"],"userName":"deep","name":'
        + b"[" * levels
        + b"]" * levels
        + b"}"
    )


HOSTILE = [
    # (method, path, body bytes or JSON, content type, expected status, scimType or None)
    ("POST", "/Users", b"x" * (1024 * 1024 + 10), "application/scim+json", 413, None),
    ("POST", "/Users", _deep(5000), "application/scim+json", 400, None),
    ("POST", "/Users", _deep(100), "application/scim+json", 400, None),
    ("POST", "/Users", b"{not json", "application/scim+json", 400, "invalidSyntax"),
    ("POST", "/Users", b'{"userName": "x"', "application/scim+json", 400, "invalidSyntax"),
    ("POST", "/Users", b"\xff\xfe\x00", "application/scim+json", 400, None),
    ("POST", "/Users", b"[]", "application/scim+json", 400, None),
    ("POST", "/Users", b'"just a string"', "application/scim+json", 400, None),
    ("POST", "/Users", json.dumps(user_body("plain")).encode(), "text/plain", 415, None),
    ("POST", "/Users", {"schemas": ["urn:evil:schema"], "userName": "evil"}, None, 400, None),
    ("POST", "/Users", {"schemas": [GROUP], "displayName": "not a user"}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER]}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": ""}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": "u" * 300}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": 12}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": "x", "active": "maybe"}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": "x", "emails": "a@b"}, None, 400, None),
    (
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "g", "members": [{"value": "no-such-id"}]},
        None,
        400,
        "invalidValue",
    ),
    ("POST", "/Groups", {"schemas": [GROUP], "displayName": "g" * 300}, None, 400, None),
    ("POST", "/Bulk", b"{}", "application/scim+json", 400, None),
    ("POST", "/Bulk", b"x" * (1024 * 1024 + 10), "application/scim+json", 413, None),
    ("GET", "/Users/" + "a" * 3000, None, None, 404, None),
    ("GET", "/Users/%00", None, None, 404, None),
    ("DELETE", "/Groups/%00x", None, None, 404, None),
    ("POST", "/Users", {"schemas": [USER], "userName": "nul\u0000"}, None, 400, None),
    ("POST", "/Users", {"schemas": [USER], "userName": "n", "title": "\u0000"}, None, 400, None),
    (
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "g", "members": [{"value": "\u0000"}]},
        None,
        400,
        None,
    ),
    ("DELETE", "/Users/does-not-exist", None, None, 404, None),
    ("PUT", "/Users", {"schemas": [USER], "userName": "x"}, None, 405, None),
    ("GET", "/Users?startIndex=abc", None, None, 400, None),
    ("GET", "/Users?count=-5&startIndex=-3", None, None, 200, None),
    ("GET", "/Users?sortBy=nope.nope", None, None, 400, None),
    ("GET", "/Users?attributes=" + "a," * 1000, None, None, 200, None),
    ("GET", "/Schemas?filter=id%20pr", None, None, 403, None),
]

BAD_FILTERS = [
    'userName eq "unterminated',
    "userName eq",
    "userName zz 3",
    "((((((((((userName pr",
    "not (" * 200 + "userName pr" + ")" * 200,
    'emails[type eq "work"',
    'nosuchattr eq "x"',
    'urn:evil:schema:foo eq "x"',
    "active eq 12",
    'meta.created gt "not a date"',
    "\x00",
    'userName eq "nul\x00"',
    'externalId eq "\x00"',
]

# Odd but valid: answered, and with no match.
ODD_FILTERS = [
    "userName eq " + '"x" or userName eq ' * 100 + '"x"',
    'userName eq "\\u0000"',
    'userName co "\\u0000"',
    'userName eq "' + "ä" * 500 + '"',
]


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "scim_type"), HOSTILE)
def test_hostile_requests_get_scim_errors(live, method, path, body, ctype, status, scim_type):
    svc, scim, _uid = live
    users, rejected = _count(svc, User), _rejections(svc)
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    response = scim.request(method, path, content=content, headers=headers)
    if status == 200:
        assert response.status_code == 200, response.text
        return
    assert_scim_error(response, status, scim_type)
    assert _count(svc, User) == users  # nothing written...
    assert _rejections(svc) == rejected + 1  # ...but the refusal is audited


def test_a_chunked_body_is_bounded_too(live):
    svc, scim, _uid = live

    def chunks():
        for _ in range(2048):
            yield b"x" * 1024

    response = scim.post("/Users", content=chunks())
    assert_scim_error(response, 413)


@pytest.mark.parametrize("scim_filter", BAD_FILTERS)
def test_bad_filters_are_400(live, scim_filter):
    _svc, scim, _uid = live
    response = scim.get("/Users", params={"filter": scim_filter})
    assert_scim_error(response, 400)


@pytest.mark.parametrize("scim_filter", ODD_FILTERS)
def test_odd_but_valid_filters_match_nothing(live, scim_filter):
    _svc, scim, _uid = live
    response = scim.get("/Users", params={"filter": scim_filter})
    assert response.status_code == 200, response.text
    assert response.json()["totalResults"] == 0


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "explode", "path": "userName", "value": "x"}],
        [{"op": "replace", "path": "id", "value": "mine"}],
        [{"op": "replace", "path": "meta.version", "value": 'W/"1"'}],
        [{"op": "remove", "path": "userName"}],
        [{"op": "replace", "path": "emails[type eq", "value": "x"}],
        [{"op": "add", "path": "groups", "value": [{"value": "x"}]}],
        [{"op": "replace", "path": "active", "value": {"deep": [1, 2]}}],
        [],
    ],
)
def test_bad_patches_are_400_and_change_nothing(live, operations):
    svc, scim, uid = live
    before = scim.get(f"/Users/{uid}").json()
    response = scim.patch(f"/Users/{uid}", json=patch(*operations))
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["schemas"] == [ERROR]
    assert scim.get(f"/Users/{uid}").json() == before


def test_the_service_never_logged_a_traceback(live):
    svc, _scim, _uid = live
    assert "Traceback" not in svc.log()


# -- Property tests, in-process: untrusted bytes meet the parsers -------------


@pytest.fixture(scope="module")
def inproc(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('scim-prop') / 'devicetrust.db'}"
    upgrade(url)
    db = Database(url)
    with db.session() as session:
        token = tokens.SCIM.create(session, "prop")
    app = ScimApplication(db, public_url="http://scim.test")
    client = Client(app)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    uid = json.loads(
        client.post(
            "/v2/Users", data=json.dumps(user_body("prop@example.com")), headers=headers
        ).get_data()
    )["id"]
    yield client, headers, uid
    db.dispose()


def _is_scim_answer(response, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.status_code, response.get_data()[:300])
    if response.status_code >= 400:
        assert json.loads(response.get_data())["schemas"] == [ERROR]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
PATHS = st.sampled_from(
    ["userName", "active", "emails", 'emails[type eq "work"].value', "name.givenName", "members"]
) | st.text(max_size=30)
OPERATION = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "Replace", "remove", "x"]) | st.text(max_size=8)},
    optional={"path": PATHS, "value": JSON},
)

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(st.text(max_size=120))
def test_any_filter_is_answered_200_or_400(inproc, scim_filter):
    client, headers, _uid = inproc
    response = client.get("/v2/Users", query_string={"filter": scim_filter}, headers=headers)
    _is_scim_answer(response, {200, 400})


@FAST
@given(st.lists(OPERATION, max_size=4))
def test_any_patch_is_answered_without_a_server_error(inproc, operations):
    client, headers, uid = inproc
    response = client.patch(
        f"/v2/Users/{uid}", data=json.dumps(patch(*operations)), headers=headers
    )
    _is_scim_answer(response, {200, 400, 409, 412})


@FAST
@given(JSON | st.binary(max_size=200).map(lambda b: {"raw": b.decode("latin-1")}))
def test_any_creation_body_is_answered_without_a_server_error(inproc, body):
    client, headers, _uid = inproc
    response = client.post("/v2/Users", data=json.dumps(body), headers=headers)
    _is_scim_answer(response, {201, 400, 409})


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_are_answered_without_a_server_error(inproc, raw):
    client, headers, _uid = inproc
    response = client.post("/v2/Groups", data=raw, headers=headers)
    _is_scim_answer(response, {201, 400, 409})
