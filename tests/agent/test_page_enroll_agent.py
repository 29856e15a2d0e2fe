"""``POST /v1/enroll`` on the real agent process, against real services, as hostile pages would.

One service is the device's own (the agent runs with ``--service`` naming it);
another plays the attacker: a genuine devicetrust service the attacker runs,
whose pages and challenges are as valid as can be, just not ours. Requests are
sent straight to the local channel with whatever ``Origin`` a page could have.
The hypothesis properties of the request parser are at the end.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, select

from agent.page_enroll import (
    MAX_CODE,
    AttemptGate,
    EnrollRefusal,
    EnrollRequest,
    allowed_origin,
    page_origin_ok,
    parse_enroll_request,
    service_url,
)
from idp_service.platform.models import AuditEvent, Device
from tests.procs import make_agent, start_service

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page-enroll")
    ours = start_service(tmp_path_factory.mktemp("ours"), f"sqlite:///{tmp / 'ours.sqlite'}")
    attacker = start_service(
        tmp_path_factory.mktemp("attacker"), f"sqlite:///{tmp / 'attacker.sqlite'}"
    )
    yield ours, attacker, tmp
    attacker.stop()
    ours.stop()


@pytest.fixture
def agent(services, tmp_path):
    ours, _, _ = services
    device = make_agent(tmp_path, "page")
    device.start("--service", ours.url, "--no-reports", "--no-callback")
    yield device
    device.stop()


def register_challenge(service, mode="code"):
    """What the service's login page gets: a register challenge bound to its sign-in."""
    browser = httpx.Client(base_url=service.url, follow_redirects=False)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    r = browser.post(f"/login/{txn}/register-challenge", json={"mode": mode})
    assert r.status_code == 200, r.text
    return r.json()["challenge"]


def enroll(device, body, origin, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if origin is not None:
        headers["Origin"] = origin
    return httpx.post(
        f"http://127.0.0.1:{device.port}/v1/enroll", content=data, headers=headers, timeout=30
    )


def ping(device):
    return httpx.get(f"http://127.0.0.1:{device.port}/v1/ping").json()


def enrollment_file(device):
    return device.state_dir / "enrollment.json"


def db_of(service):
    return create_engine(service.env["DEVICETRUST_DATABASE_URL"])


def devices_in(service):
    engine = db_of(service)
    with engine.connect() as conn:
        rows = conn.execute(select(Device.id, Device.state)).all()
    engine.dispose()
    return rows


def last_audit(service, action="device.register"):
    engine = db_of(service)
    with engine.connect() as conn:
        row = conn.execute(
            select(AuditEvent.outcome, AuditEvent.code, AuditEvent.details)
            .where(AuditEvent.action == action)
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).first()
    engine.dispose()
    return row


def error_code(r):
    return r.json()["error"]["code"]


# ---- an agent that is not enrolled ------------------------------------------------------


def test_not_enrolled_tells_any_page_and_whether_it_may_enroll_here(services, agent):
    ours, attacker, _ = services
    url = f"http://127.0.0.1:{agent.port}/v1/challenge"
    for origin, here in ((ours.url, True), (attacker.url, False), (EVIL, False)):
        pre = httpx.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin
        r = httpx.post(url, content=b'{"challenge": "x.y"}', headers={"Origin": origin})
        assert r.status_code == 409 and error_code(r) == "not_enrolled"
        assert r.json()["error"]["enroll_here"] is here


def test_a_foreign_page_cannot_enroll_the_agent_anywhere(services, agent):
    ours, attacker, _ = services
    cases = [
        # The attacker's own page, with its own genuine service's challenge.
        (attacker.url, register_challenge(attacker)),
        # Some web site with a challenge it got from our service.
        (EVIL, register_challenge(ours)),
        # Our origin in Referer only: a page must send Origin.
        (None, register_challenge(ours)),
    ]
    for origin, token in cases:
        headers = {"Referer": ours.url + "/login/x"} if origin is None else {}
        r = enroll(agent, {"challenge": token, "code": "ABCD-EFGH-JKLM-NPQR"}, origin, **headers)
        assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
    # Our origin, but the attacker's challenge (say, injected into our page): the agent
    # verifies it under the key it fetched from our service, and refuses.
    r = enroll(agent, {"challenge": register_challenge(attacker), "code": "ABCD"}, ours.url)
    assert r.status_code == 403 and error_code(r) == "unknown_server"
    assert r.headers["access-control-allow-origin"] == ours.url
    # An authenticate challenge is not a register challenge.
    browser = httpx.Client(base_url=ours.url, follow_redirects=False)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    login = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    r = enroll(agent, {"challenge": login, "code": "ABCD"}, ours.url)
    assert r.status_code == 403 and error_code(r) == "wrong_purpose"
    assert not enrollment_file(agent).exists() and ping(agent)["enrolled"] is False
    assert devices_in(ours) == [] and devices_in(attacker) == []


def test_a_wrong_or_used_code_is_a_clear_error_and_stores_nothing(services, agent, tmp_path):
    ours, _, _ = services
    r = enroll(
        agent, {"challenge": register_challenge(ours), "code": "WRNG-WRNG-WRNG-WRNG"}, ours.url
    )
    assert r.status_code == 403 and error_code(r) == "enroll_code_invalid"
    assert r.json()["error"]["message"] and r.json()["error"]["hint"]
    assert r.headers["access-control-allow-origin"] == ours.url
    assert last_audit(ours)[:2] == ("rejected", "enroll_code_invalid")
    used = ours.enroll_code("used@example.com")
    other = make_agent(tmp_path, "other")
    other.enroll(ours.url, used)
    before = devices_in(ours)
    r = enroll(agent, {"challenge": register_challenge(ours), "code": used}, ours.url)
    assert r.status_code == 403 and error_code(r) == "enroll_code_used"
    assert devices_in(ours) == before
    assert last_audit(ours)[:2] == ("rejected", "enroll_code_used")
    # A code that cannot be one is refused by the agent without asking the service.
    r = enroll(agent, {"challenge": register_challenge(ours), "code": "<script>"}, ours.url)
    assert r.status_code == 400 and error_code(r) == "enroll_code_invalid"
    assert not enrollment_file(agent).exists() and ping(agent)["enrolled"] is False
    assert used not in agent.log()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "malformed"),
        (b"[]", 400, "malformed"),
        (b'{"code": "ABCD"}', 400, "malformed"),
        (b'{"challenge": 5}', 400, "malformed"),
        (b'{"challenge": "a.b", "challenge": "a.b"}', 400, "malformed"),
        (b'{"challenge": "a.b", "code": 12345678}', 400, "malformed"),
        (b'{"challenge": "a.b", "code": ""}', 400, "enroll_code_invalid"),
        (b'{"challenge": "a.b"}', 400, "malformed"),  # parsed, then the token is refused
    ],
)
def test_malformed_enroll_requests(services, agent, body, status, code):
    ours, _, _ = services
    r = enroll(agent, body, ours.url)
    assert (r.status_code, error_code(r)) == (status, code)


def test_enroll_from_the_page_then_an_enrolled_agent_is_never_re_pointed(services, agent):
    ours, attacker, _ = services
    code = ours.enroll_code("page@example.com")
    r = enroll(agent, {"challenge": register_challenge(ours), "code": code}, ours.url)
    assert r.status_code == 200, (r.text, agent.log())
    assert r.json() == {
        "status": "enrolled",
        "state": "trusted",
        "user": "page@example.com",
        "server_url": ours.url,
    }
    assert ping(agent)["enrolled"] is True
    stored = json.loads(enrollment_file(agent).read_text())
    assert stored["server_url"] == ours.url and stored["user"] == "page@example.com"
    assert code not in agent.log()
    # Re-pointing: the attacker's page with its own service's challenge, any code.
    attacker_code = attacker.enroll_code("victim@example.com")
    r = enroll(
        agent, {"challenge": register_challenge(attacker), "code": attacker_code}, attacker.url
    )
    assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
    # ... or handed through our page: verified under the pinned key, refused.
    r = enroll(agent, {"challenge": register_challenge(attacker), "code": attacker_code}, ours.url)
    assert r.status_code == 403 and error_code(r) == "unknown_server"
    # ... or broker TOFU on the attacker's side: nothing either.
    r = enroll(agent, {"challenge": register_challenge(attacker)}, attacker.url)
    assert r.status_code == 403
    assert json.loads(enrollment_file(agent).read_text()) == stored
    assert devices_in(attacker) == []
    # Our service still knows the device, so registering again is refused by it.
    r = enroll(agent, {"challenge": register_challenge(ours), "code": code}, ours.url)
    assert r.status_code == 409 and error_code(r) == "device_exists"


def test_a_device_the_service_forgot_registers_again_with_its_service(services, agent):
    ours, _, _ = services
    first = ours.enroll_code("forgot@example.com")
    r = enroll(agent, {"challenge": register_challenge(ours), "code": first}, ours.url)
    assert r.status_code == 200
    device_id = agent.cli_json("id")["device_id"]
    engine = db_of(ours)
    with engine.begin() as conn:
        conn.execute(delete(Device).where(Device.id == device_id))
    engine.dispose()
    again = ours.enroll_code("forgot@example.com")
    r = enroll(agent, {"challenge": register_challenge(ours), "code": again}, ours.url)
    assert r.status_code == 200 and r.json()["state"] == "trusted"
    assert [d.id for d in devices_in(ours) if d.id == device_id] == [device_id]


def test_enrollment_attempts_are_rate_limited(services, agent):
    ours, _, _ = services
    statuses = []
    for _ in range(6):
        body = {"challenge": register_challenge(ours), "code": "WRNG-WRNG-WRNG-WRNG"}
        statuses.append(enroll(agent, body, ours.url).status_code)
    assert statuses == [403] * 5 + [429]
    # A page from another origin neither counts nor is told anything.
    r = enroll(agent, {"challenge": register_challenge(ours), "code": "ABCD"}, EVIL)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_an_agent_without_a_service_does_not_enroll_from_pages(services, tmp_path):
    ours, _, _ = services
    device = make_agent(tmp_path, "bare")
    device.start("--no-reports")
    try:
        r = httpx.post(
            f"http://127.0.0.1:{device.port}/v1/challenge",
            content=b'{"challenge": "x.y"}',
            headers={"Origin": ours.url},
        )
        assert r.json()["error"]["enroll_here"] is False
        code = ours.enroll_code("bare@example.com")
        r = enroll(device, {"challenge": register_challenge(ours), "code": code}, ours.url)
        assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
        assert not enrollment_file(device).exists()
    finally:
        device.stop()


def test_the_service_setting_must_be_https_or_loopback(tmp_path):
    device = make_agent(tmp_path, "cfg")
    out = device.cli("run", "--service", "http://idp.example.com", check=False)
    assert out.returncode != 0 and "https://" in out.stderr


# ---- the request parser, by property ------------------------------------------------------

tokens = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
    min_size=1,
    max_size=200,
)
codes = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 -]{0,40}[A-Za-z0-9]", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_refuses_any_bytes_with_a_stable_code(raw):
    try:
        req = parse_enroll_request(raw)
    except EnrollRefusal as exc:
        assert exc.code in {"malformed", "too_large", "enroll_code_invalid"}
        assert 400 <= exc.status < 500
    else:
        assert isinstance(req.challenge, str) and 0 < len(req.challenge) <= 8192


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["challenge", "code", "mode", "x"]), json_values))
def test_parser_on_any_json_object(obj):
    raw = json.dumps(obj).encode()
    try:
        req = parse_enroll_request(raw)
    except EnrollRefusal as exc:
        assert exc.code in {"malformed", "enroll_code_invalid"}
        return
    assert req.challenge == obj["challenge"]
    assert req.code is None or req.code == obj["code"].strip()


@settings(max_examples=200, deadline=None)
@given(tokens, st.none() | codes, st.dictionaries(st.sampled_from(["mode", "v"]), st.integers()))
def test_parser_round_trips_valid_requests(token, code, extra):
    body = {"challenge": token, **extra}
    if code is not None:
        body["code"] = code
    assert parse_enroll_request(json.dumps(body).encode()) == EnrollRequest(token, code)
    if code is not None:  # surrounding spaces do not matter, other characters do
        padded = json.dumps({"challenge": token, "code": f"  {code} "}).encode()
        assert parse_enroll_request(padded).code == code


@given(st.text(min_size=1, max_size=80))
def test_parser_codes_are_short_letters_digits_dashes(code):
    raw = json.dumps({"challenge": "a.b", "code": code}).encode()
    stripped = code.strip()
    ok = (
        0 < len(stripped) <= MAX_CODE
        and stripped[0].isascii()
        and stripped[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in " -") for c in stripped)
    )
    try:
        assert parse_enroll_request(raw).code == stripped and ok
    except EnrollRefusal as exc:
        assert exc.code == "enroll_code_invalid" and not ok


def test_parser_size_cap():
    raw = json.dumps({"challenge": "a" * 17000}).encode()
    with pytest.raises(EnrollRefusal) as exc:
        parse_enroll_request(raw)
    assert (exc.value.code, exc.value.status) == ("too_large", 413)


@given(st.text(max_size=60))
def test_origin_rules(origin):
    # Only exact scheme://host[:port] origins, https or loopback http, ever pass.
    if page_origin_ok(origin):
        assert origin.startswith(
            ("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")
        )
        assert "/" not in origin.split("://", 1)[1]


def test_origin_checks_and_services():
    assert page_origin_ok("https://idp.example.com")
    assert page_origin_ok("http://127.0.0.1:8000") and page_origin_ok("http://[::1]:8000")
    for bad in (
        "http://idp.example.com",
        "https://idp.example.com/",
        "http://evil.example@127.0.0.1:8000",
        "null",
        "file://",
        "",
    ):
        assert not page_origin_ok(bad)
    assert service_url(" HTTPS://IdP.Example.com/ ") == "https://idp.example.com"
    with pytest.raises(ValueError):
        service_url("https://idp.example.com/?next=evil")
    services = ("https://idp.example.com",)
    assert allowed_origin("https://idp.example.com", None, services)
    assert not allowed_origin(EVIL, None, services)
    assert not allowed_origin(None, None, services)


def test_attempt_gate_window():
    gate = AttemptGate(limit=2, window=10)
    gate.admit(0)
    gate.admit(1)
    with pytest.raises(EnrollRefusal) as exc:
        gate.admit(5)
    assert exc.value.status == 429
    gate.admit(10.5)  # the first attempt left the window
