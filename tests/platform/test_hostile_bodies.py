"""Hostile request bodies against every route that takes one (in process, SQLite).

The routes come from the app's url_map (and scim2-server's route table for SCIM,
which is mounted beside Flask): each one is classified here as reading a JSON
body, a form body or no body, and a test fails when a new route is not, so none
can be forgotten. Each gets deep nesting, duplicate keys, NaN, a byte-order mark,
lone surrogates, NULs, huge numbers, random bytes and wrong types, with a real
login transaction, admin API token, SCIM token and admin console session, so the
body is actually read. Never a 5xx; JSON routes answer a JSON error with a
stable code (SCIM: a SCIM error); nothing is written but audit rows.

End-to-end cases against a real service process are in ``test_hostile_bodies_e2e.py``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scim2_server.routing import ROUTES as SCIM_ROUTES
from sqlalchemy import MetaData, select

from idp_service.admin import bootstrap
from idp_service.api import core as api_core
from idp_service.platform.errors import HINTS
from idp_service.web.errors import HTTP_CODES, PROTOCOL_CODES
from tests.admin_helpers import csrf_of
from tests.api_helpers import make_token
from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# Routes whose JSON body is read by idp_service/web/bodies.py (or parsed by the protocol).
JSON_ROUTES = {
    ("POST", "/agent/v1/challenges"),
    ("POST", "/agent/v1/report/challenge"),
    ("POST", "/agent/v1/register"),
    ("POST", "/agent/v1/callback"),
    ("POST", "/agent/v1/report"),
    ("POST", "/agent/v1/notices"),
    ("POST", "/agent/v2/report"),
    ("POST", "/agent/v2/report/full"),
    ("POST", "/agent/v2/report/reset"),
    ("POST", "/login/<txn_id>/response"),
    ("POST", "/login/<txn_id>/register-challenge"),
}
# HTML form routes (the browser's pages): werkzeug's bounded form parser.
FORM_ROUTES = {
    ("POST", "/admin/bootstrap"),
    ("POST", "/admin/devices/<device_id>/action"),
    ("POST", "/admin/exemptions"),
    ("POST", "/admin/exemptions/<int:exemption_id>/remove"),
    ("POST", "/admin/sessions/end-others"),
    ("POST", "/admin/settings/policy"),
    ("POST", "/admin/settings/reauth"),
    ("POST", "/admin/signin"),
    ("POST", "/admin/signout"),
    ("POST", "/admin/webhook-deliveries/<int:delivery_id>/redeliver"),
    ("POST", "/admin/webhooks"),
    ("POST", "/admin/webhooks/<int:endpoint_id>/active"),
    ("POST", "/admin/webhooks/<int:endpoint_id>/delete"),
    ("POST", "/admin/webhooks/<int:endpoint_id>/rotate"),
    ("POST", "/admin/webhooks/<int:endpoint_id>/test"),
    ("POST", "/login/<txn_id>/approve"),
    ("POST", "/login/<txn_id>/continue"),
    ("POST", "/saml/sso"),
    # The OpenID Connect provider reads its urlencoded forms through web/bodies.py.
    ("POST", "/oidc/authorize"),
    ("POST", "/oidc/token"),
    ("POST", "/oidc/logout"),
    ("POST", "/admin/oidc-clients"),
    ("POST", "/admin/oidc-clients/<client_id>/enabled"),
    ("POST", "/admin/oidc-clients/<client_id>/rotate"),
    ("POST", "/admin/oidc-clients/<client_id>/delete"),
}
# POST routes that read no body at all.
NO_BODY_ROUTES = {
    ("POST", "/login/<txn_id>/challenge"),
    ("POST", "/login/<txn_id>/check-again"),
    ("POST", "/oidc/userinfo"),
}
# Tables a refused request may write to.
AUDIT_TABLES = {"audit_events"}
# Columns that record use rather than content (a token's last use).
USE_COLUMNS = {"last_used_at", "last_used", "uses"}

STABLE = (
    set(PROTOCOL_CODES)
    | set(HTTP_CODES.values())
    | set(HINTS)
    | {
        "invalid_body",
        "login_unknown",
        "login_closed",
        "not_found",
        "unsupported_media_type",
        "device_not_trusted",
        "device_exists",
    }
)
SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _api_routes() -> dict[tuple[str, str], bool]:
    """Admin API (method, rule) -> whether it takes a JSON body, from its operation registry."""
    return {
        (op.method, api_core.PREFIX + api_core._flask_rule(op)): op.body is not None
        for op in api_core.OPERATIONS
    }


def _scim_routes(resource_endpoints: list[str]) -> list[tuple[str, str]]:
    """SCIM (method, path) with a body, from scim2-server's route table, made concrete."""
    out = []
    for route in SCIM_ROUTES:
        if route.method not in {"POST", "PUT", "PATCH"} or route.pattern == "/Me":
            continue  # /Me is not served: 501, as RFC 7644 says
        for endpoint in resource_endpoints if "{endpoint}" in route.pattern else [None]:
            path = route.pattern.replace("{resource_id}", "00000000-0000-4000-8000-000000000000")
            if endpoint is not None:
                path = path.replace("{endpoint}", endpoint)
            out.append((route.method, "/scim/v2" + path))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from idp_service import tokens
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    tmp = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    upgrade(url)
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": url,
            "DEVICETRUST_DATA_DIR": str(tmp / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            # Hundreds of hostile requests from one address: the limits would answer
            # 429 before the reader is reached (tests/platform/test_ratelimit.py covers them).
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
        }
    )
    app = create_app(settings)
    db = app.extensions["devicetrust"].db
    # A browser with a login transaction, for the login routes.
    browser = app.test_client()
    txn = browser.get("/login").headers["Location"].rsplit("/", 1)[-1]
    # An admin console session (bootstrap token), for the console's forms.
    console = app.test_client()
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(console.get("/admin/bootstrap").get_data(as_text=True))
    assert console.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    api_token = make_token(db, "hostile", "write")
    with db.session() as s:
        scim_token = tokens.SCIM.create(s, "hostile", actor="test")
    yield {
        "app": app,
        "db": db,
        "browser": browser,
        "console": console,
        "txn": txn,
        "api_token": api_token,
        "scim_token": scim_token,
    }
    db.dispose()


def _concrete(rule: str, txn: str) -> str:
    """A URL for ``rule``: the real login transaction, made-up ids elsewhere."""
    path = rule.replace("<txn_id>", txn)
    path = re.sub(r"<int:[a-z_]+>", "999999", path)
    return re.sub(r"<[a-z_]+>", "00000000-0000-4000-8000-000000000000", path)


def _targets(world) -> list[tuple[str, str, str]]:
    """Every (kind, method, url) that takes a body: json, scim, form or none."""
    out = []
    for method, rule in sorted(JSON_ROUTES):
        out.append(("json", method, _concrete(rule, world["txn"])))
    for method, rule in sorted(FORM_ROUTES):
        out.append(("form", method, _concrete(rule, world["txn"])))
    for method, rule in sorted(NO_BODY_ROUTES):
        out.append(("none", method, _concrete(rule, world["txn"])))
    for (method, rule), has_body in sorted(_api_routes().items()):
        if method in BODY_METHODS:
            out.append(("json" if has_body else "none", method, _concrete(rule, world["txn"])))
    for method, path in _scim_routes(["Users", "Groups"]):
        out.append(("scim", method, path))
    return out


def test_every_route_that_takes_a_body_is_classified(world):
    """A new POST/PUT/PATCH/DELETE route fails this until it is added above."""
    api = _api_routes()
    found = set()
    for rule in world["app"].url_map.iter_rules():
        for method in (rule.methods or set()) & BODY_METHODS:
            found.add((method, rule.rule))
    known = JSON_ROUTES | FORM_ROUTES | NO_BODY_ROUTES | set(api)
    assert found - known == set(), "classify these routes in tests/platform/test_hostile_bodies.py"
    assert {r for r in JSON_ROUTES | FORM_ROUTES | NO_BODY_ROUTES} <= found, "stale entries"
    api_in_map = {(m, r) for m, r in found if r.startswith(api_core.PREFIX)}
    assert api_in_map == {k for k in api if k[0] in BODY_METHODS}
    assert len(_scim_routes(["Users", "Groups"])) >= 9  # create, replace, patch, search, bulk


# -- hostile bodies --------------------------------------------------------------------------

FIELDS = ["purpose", "device_id", "mode", "challenge", "metadata_xml", "schemas", "userName"]


def _deep(n: int, opener: str = "[") -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * n + "1" + closer * n).encode()


FIXED_BODIES = [
    _deep(50_000),
    _deep(50_000, '{"a":'),
    _deep(2_000),
    _deep(33),
    b'{"purpose": "register", "purpose": "register"}',
    b'{"mode": "code", "mode": "tofu"}',
    b'{"device_id": "a", "device_id": "b"}',
    b'{"purpose": NaN}',
    b'{"device_id": Infinity}',
    b"[-Infinity]",
    b"NaN",
    b'{"x": 1e999}',
    b'\xef\xbb\xbf{"purpose": "register"}',
    b'\xef\xbb\xbf{"mode": "code"}',
    b'\xef\xbb\xbf{"device_id": "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"}',
    b'{"device_id": "\\ud800"}',
    b'{"\\udfff": 1}',
    b'{"mode": "\\ud800"}',
    b'{"schemas": ["\\udbff"], "userName": "x"}',
    b'{"device_id": "\\u0000\\u0000\\u0000"}',
    b'{"device_id": "\\u0000"}',
    b'{"device_id": "a\\u0007b"}',
    b'{"device_id": " "}',
    b'{"challenge": "\\u0000"}',
    b'{"device_id": ' + b"9" * 5000 + b"}",
    b'{"device_id": ' + b"9" * 400 + b"}",
    b'{"purpose": 1' + b"0" * 400 + b"}",
    b"\xff\xfe{\x00}\x00",
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"\xc0\xaf",  # overlong
    b"\x00",
    b"null",
    b"[]",
    b'"register"',
    b"12",
    b'{"purpose": ["register"]}',
    b'{"device_id": 5}',
    b'{"device_id": {"id": "x"}}',
    b'{"mode": null}',
    b'{"challenge": 1.5}',
    b'{"v": 1, "v": 1}',
    # Envelope-shaped: a report v2 envelope and a v1 answer, each broken.
    b'{"v": 2, "epk": "", "box": ""}',
    b'{"v": 2, "epk": "AAAA", "box": "!!"}',
    b'{"v": 2, "epk": "' + b"A" * 43 + b'", "box": "' + b"A" * 400 + b'"}',
    b'{"v": 2, "epk": null, "box": []}',
    b'{"v": 1, "cid": "' + b"A" * 22 + b'", "epk": "' + b"A" * 43 + b'", "box": "AAAA"}',
    b'{"v": 9007199254740993, "epk": "", "box": ""}',
]

_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


def _wrong_type(field: str) -> st.SearchStrategy[bytes]:
    import json

    non_string = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    value = (
        non_string
        | st.lists(_json_scalar, max_size=3)
        | st.dictionaries(st.text(), _json_scalar, max_size=2)
    )
    return value.map(lambda v: json.dumps({field: v}).encode())


hostile = st.one_of(
    st.sampled_from(FIXED_BODIES),
    st.integers(33, 60_000).map(_deep),
    st.sampled_from(FIELDS).flatmap(_wrong_type),
    st.binary(min_size=1, max_size=300).filter(lambda b: b.strip(b" \t\r\n")),
    st.tuples(st.sampled_from(FIELDS), st.integers(0xD800, 0xDFFF)).map(
        lambda t: f'{{"{t[0]}": "x\\u{t[1]:04x}y"}}'.encode()
    ),
    # Control characters where the protocol takes identifiers (SCIM's strings may hold them).
    st.tuples(st.sampled_from(FIELDS[:4]), st.integers(0, 0x1F)).map(
        lambda t: f'{{"{t[0]}": "\\u{t[1]:04x}"}}'.encode()
    ),
)
CONTENT_TYPES = [
    "application/json",
    "application/scim+json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    None,
]


_TABLES: dict[int, list] = {}


def _snapshot(db) -> dict[str, list]:
    """Every row of every table but the audit's, without use-tracking columns."""
    if id(db) not in _TABLES:
        meta = MetaData()
        with db.engine.connect() as conn:
            meta.reflect(conn)
        _TABLES[id(db)] = [
            (name, select(*[c for c in table.columns if c.name not in USE_COLUMNS]))
            for name, table in sorted(meta.tables.items())
            if name not in AUDIT_TABLES
        ]
    with db.engine.connect() as conn:
        return {name: sorted(map(repr, conn.execute(q).all())) for name, q in _TABLES[id(db)]}


def _send(world, kind: str, method: str, url: str, body: bytes, content_type: str | None):
    if url.startswith("/admin/"):
        client = world["console"]
    else:
        client = world["browser"]
    headers = {}
    if url.startswith("/api/"):
        headers["Authorization"] = f"Bearer {world['api_token']}"
    if url.startswith("/scim/"):
        headers["Authorization"] = f"Bearer {world['scim_token']}"
    if content_type:
        headers["Content-Type"] = content_type
    return client.open(url, method=method, data=body, headers=headers)


def _strict_ok(body: bytes) -> bool:
    try:
        strict_json.loads(body, max_size=len(body) + 1)
    except ProtocolError:
        return False
    return True


def _check(kind: str, url: str, body: bytes, resp) -> None:
    """Never a 5xx. On a JSON route, a body the strict reader refuses is a 4xx JSON
    error with a stable code (SCIM: a SCIM error); one it reads may be served."""
    where = f"{kind} {url} {body[:80]!r}"
    assert resp.status_code < 500, (where, resp.status_code, resp.get_data()[:300])
    if kind not in ("json", "scim"):
        return
    if not _strict_ok(body):
        assert 400 <= resp.status_code < 500, (where, resp.status_code, resp.get_data()[:300])
    if resp.status_code < 400:
        return
    if kind == "json":
        assert resp.is_json, where
        code = resp.json["error"]["code"]
        assert code in STABLE, (where, code)
    else:
        payload = resp.get_json(force=True)
        assert payload["schemas"] == [SCIM_ERROR], (where, payload)
        assert str(payload["status"]) == str(resp.status_code)


def test_fixed_hostile_bodies_on_every_route(world):
    """Each hostile body of the list on each route, with each likely content type."""
    before = _snapshot(world["db"])
    for kind, method, url in _targets(world):
        for body in FIXED_BODIES:
            content_type = {
                "json": "application/json",
                "scim": "application/scim+json",
                "form": "application/x-www-form-urlencoded",
                "none": "application/json",
            }[kind]
            _check(kind, url, body, _send(world, kind, method, url, body, content_type))
    assert _snapshot(world["db"]) == before


def test_strict_reader_codes_on_agent_routes(world):
    """The cases the issue names: 400 malformed, not a 500, for each of them."""
    client = world["browser"]
    for url in (
        "/agent/v1/challenges",
        "/agent/v1/report/challenge",
        f"/login/{world['txn']}/register-challenge",
    ):
        # 30,000 levels fit the 64 KiB these routes take; 50,000 do not.
        r = client.post(url, data=_deep(30_000), content_type="application/json")
        assert r.status_code == 400 and r.json["error"]["code"] == "malformed", url
        r = client.post(url, data=_deep(50_000), content_type="application/json")
        assert r.status_code == 413 and r.json["error"]["code"] == "too_large", url
    for body in (
        b'{"device_id": "\\ud800"}',
        b'{"device_id": "\\u0000\\u0000"}',
        b'{"device_id": "a", "device_id": "a"}',
        b'\xef\xbb\xbf{"device_id": "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"}',
        b'{"device_id": "4f1c2a9e", "x": NaN}',
        b'{"device_id": "4f1c2a9e", "x": Infinity}',
    ):
        r = client.post("/agent/v1/report/challenge", data=body, content_type="application/json")
        assert r.status_code == 400 and r.json["error"]["code"] == "malformed", body
    for body in (
        b'{"purpose": "register", "purpose": "register"}',
        b'\xef\xbb\xbf{"purpose": "register"}',
        b'{"purpose": "register", "n": NaN}',
    ):
        r = client.post("/agent/v1/challenges", data=body, content_type="application/json")
        assert r.status_code == 400 and r.json["error"]["code"] == "malformed", body
    # The honest requests still work.
    ok = client.post("/agent/v1/challenges", json={"purpose": "register"})
    assert ok.status_code == 200 and ok.json["challenge"]
    ok = client.post("/agent/v1/report/challenge", json={"device_id": "4f1c2a9e-6b8d"})
    assert ok.status_code == 200 and ok.json["challenge"]


# The report v2 routes and their bounds (idp_service/devices/web.py).
V2_ROUTES = (
    ("/agent/v2/report", 64 * 1024),
    ("/agent/v2/report/full", 1024 * 1024),
    ("/agent/v2/report/reset", 64 * 1024),
)


def test_strict_reader_codes_on_v2_report_routes(world):
    """Each v2 route at its own bound, the strict reader's cases, and hostile bodies inside
    a box that opens: 400/413 with their codes, and nothing written but audit."""
    from nacl.public import Box, PrivateKey, PublicKey

    from trust_protocol import encoding
    from trust_protocol.encoding import b64e
    from trust_protocol.report_keys import report_box_public

    client = world["browser"]
    before = _snapshot(world["db"])
    for url, bound in V2_ROUTES:
        r = client.post(url, data=_deep(30_000), content_type="application/json")
        assert r.status_code == 400 and r.json["error"]["code"] == "malformed", url
        at_bound = b"{" + b" " * (bound - 2) + b"}"
        r = client.post(url, data=at_bound, content_type="application/json")
        assert r.status_code == 400 and r.json["error"]["code"] == "malformed", url
        r = client.post(url, data=at_bound + b" ", content_type="application/json")
        assert r.status_code == 413 and r.json["error"]["code"] == "too_large", url
        for body in (
            b'{"v": 2, "v": 2, "epk": "", "box": ""}',
            b'\xef\xbb\xbf{"v": 2, "epk": "", "box": ""}',
            b'{"v": NaN, "epk": "", "box": ""}',
            b'{"v": 2, "epk": "\\ud800", "box": ""}',
            b"",
        ):
            r = client.post(url, data=body, content_type="application/json")
            assert r.status_code == 400 and r.json["error"]["code"] == "malformed", (url, body)
        # Read, but not a message of this route: 400 with a stable code.
        for body in (
            b'{"v": 2, "epk": "\\u0000", "box": ""}',
            b'{"v": 1, "cid": "", "epk": "", "box": ""}',
            b'{"v": 2, "epk": "' + b"A" * 43 + b'", "box": "' + b"A" * 400 + b'"}',
        ):
            r = client.post(url, data=body, content_type="application/json")
            assert r.status_code == 400 and r.json["error"]["code"] in STABLE, (url, body)
    # Inside a box the service opens, the body is read as strictly as outside it.
    box_key = report_box_public(world["app"].extensions["devicetrust"].keys.box_secret)
    for inner in (
        _deep(20_000),
        b'{"v": 2, "v": 2}',
        b'{"v": 2, "counter": NaN}',
        b'\xef\xbb\xbf{"v": 2}',
        b'{"v": 2, "device_id": "\\ud800"}',
        b"\xff\xfe",
        b'{"v": 2, "counter": ' + b"9" * 5000 + b"}",
    ):
        eph = PrivateKey.generate()
        sealed = Box(eph, PublicKey(box_key)).encrypt(b"\0" * 64 + inner)
        envelope = encoding.dumps({"v": 2, "epk": b64e(bytes(eph.public_key)), "box": b64e(sealed)})
        for url in ("/agent/v2/report", "/agent/v2/report/full"):
            r = client.post(url, data=envelope, content_type="application/json")
            assert r.status_code == 400 and r.json["error"]["code"] == "malformed", (url, inner)
    assert _snapshot(world["db"]) == before


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), body=hostile, content_type=st.sampled_from(CONTENT_TYPES))
def test_hostile_bodies_property(world, data, body, content_type):
    """Any hostile body, any route that takes one: never 5xx, a stable error, no writes."""
    kind, method, url = data.draw(st.sampled_from(_targets(world)), label="route")
    before = _snapshot(world["db"])
    resp = _send(world, kind, method, url, body, content_type)
    _check(kind, url, body, resp)
    assert _snapshot(world["db"]) == before
