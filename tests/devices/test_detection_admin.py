"""Detection's flags through the admin API and console, in process, on SQLite and PostgreSQL:
decisions resolve flags, hostile input is a stable 4xx that writes nothing but audit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp_service.admin import bootstrap
from idp_service.devices import detection, registry
from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.errors import ServiceError
from idp_service.platform.models import AuditEvent, Device, User
from tests.admin_helpers import csrf_of, make_device, make_user
from tests.api_helpers import make_token


@pytest.fixture
def world(service_ctx):
    service = service_ctx.extensions["devicetrust"]
    db = service.db
    with db.session() as s:
        ivy = make_user(s, "ivy@example.com")
        clean = make_device(s, ivy, state="trusted", hostname="clean")
        flagged = make_device(s, ivy, state="trusted", hostname="flagged")
        suspended = make_device(s, ivy, state="trusted", hostname="suspended")
        finding = detection.Finding(
            "hardware_mismatch",
            {"stored": {"hardware_uuid": "a"}, "seen": {"hardware_uuid": "b", "serial": "S2"}},
        )
        context = {"at": "2026-11-22T08:00:00+00:00", "via": "callback", "remote_addr": "10.0.0.9"}
        detection.apply(
            s, flagged, [finding], service.settings.__class__(clone_policy="flag"), context=context
        )
        code = detection.apply(s, suspended, [finding], service.settings, context=context)
        assert code == "device_suspended" and suspended.state == "suspended"
        ids = {"clean": clean.id, "flagged": flagged.id, "suspended": suspended.id}
    return {
        "app": service_ctx,
        "db": db,
        "client": service_ctx.test_client(),
        "write": make_token(db, "w", "write"),
        "read": make_token(db, "r", "read"),
        **ids,
    }


def _call(w, method, path, token="write", **kw):
    return w["client"].open(
        f"/api/v1{path}", method=method, headers={"Authorization": f"Bearer {w[token]}"}, **kw
    )


def _snapshot(db):
    """Flags, device states and decision events (refusals are audited under other actions)."""
    with db.session() as s:
        flags = [
            (f.id, f.resolved_at, f.resolution, f.evidence)
            for f in s.scalars(select(DeviceFlag).order_by(DeviceFlag.id))
        ]
        states = sorted(s.execute(select(Device.id, Device.state, Device.hardware_uuid)).all())
        events = s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action.like("device.%"))
        )
    return flags, states, events


def test_flags_are_shown_and_listed_for_review(world):
    detail = _call(world, "GET", f"/devices/{world['suspended']}").json
    (flag,) = detail["flags"]
    assert flag["kind"] == "hardware_mismatch" and flag["evidence"]["remote_addr"] == "10.0.0.9"
    assert detail["device"]["state"] == "suspended"
    review = {d["id"] for d in _call(world, "GET", "/review").json["items"]}
    assert review == {world["flagged"], world["suspended"]}
    flagged = {d["id"] for d in _call(world, "GET", "/devices?flagged=true").json["items"]}
    assert flagged == review
    assert _call(world, "GET", "/overview").json["needs_review"] == 2
    assert _call(world, "GET", "/overview").json["devices"]["suspended"] == 1
    with world["db"].session() as s:
        events = list(
            s.scalars(select(AuditEvent).where(AuditEvent.device_id == world["suspended"]))
        )
    assert [e.action for e in events] == ["device.flag", "device.suspend"]


@pytest.mark.parametrize(
    ("action", "state"), [("approve", "trusted"), ("deny", "denied"), ("revoke", "revoked")]
)
def test_deciding_about_a_suspended_device_resolves_its_flags(world, action, state):
    r = _call(world, "POST", f"/devices/{world['suspended']}/{action}", json={"reason": "seen"})
    assert r.status_code == 200 and r.json["state"] == state
    (flag,) = _call(world, "GET", f"/devices/{world['suspended']}/flags").json["items"]
    assert flag["resolution"] == f"{action}: seen" and flag["resolved_by"] == "api:w"
    if action == "approve":  # the hardware it was seen with becomes the registered one
        assert r.json["hardware_uuid"] == "b" and r.json["serial"] == "S2"
    with world["db"].session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == f"device.{action}")).one()
    assert event.details["flags_resolved"] == 1 and event.details["from"] == "suspended"


def test_retrust_is_not_a_way_out_of_suspension(world):
    with world["db"].session() as s, pytest.raises(ServiceError) as info:
        registry.change_state(s, world["suspended"], "retrust", reason="x", actor="t")
    assert info.value.code == "bad_transition"


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "code"),
    [
        ("GET", "/devices/nope/flags", {}, 404, "device_not_found"),
        ("POST", "/devices/nope/flags/resolve", {"json": {"reason": "x"}}, 404, "device_not_found"),
        ("POST", "/devices/{clean}/flags/resolve", {"json": {"reason": "x"}}, 409, "no_open_flags"),
        (
            "POST",
            "/devices/{suspended}/flags/resolve",
            {"json": {"reason": "x"}},
            409,
            "bad_transition",
        ),
        ("POST", "/devices/{flagged}/flags/resolve", {"json": {}}, 400, "invalid_body"),
        ("POST", "/devices/{flagged}/flags/resolve", {"json": {"reason": ""}}, 400, "invalid_body"),
        (
            "POST",
            "/devices/{flagged}/flags/resolve",
            {"json": {"reason": " "}},
            400,
            "reason_required",
        ),
        (
            "POST",
            "/devices/{flagged}/flags/resolve",
            {"json": {"reason": "x" * 3000}},
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/devices/{flagged}/flags/resolve",
            {"json": {"reason": "x", "evil": 1}},
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/devices/{flagged}/flags/resolve",
            {"data": "{", "content_type": "application/json"},
            400,
            "malformed",
        ),
        (
            "POST",
            "/devices/{flagged}/flags/resolve",
            {"json": {"reason": "a\x00b"}},
            400,
            "invalid_body",
        ),
        ("GET", "/devices?flagged=maybe", {}, 400, "bad_parameter"),
        ("GET", "/devices?state=cloned", {}, 400, "bad_parameter"),
        ("GET", "/review?limit=0", {}, 400, "bad_parameter"),
        ("POST", "/devices/{clean}/retrust", {"json": {"reason": "x"}}, 409, "bad_transition"),
        ("POST", "/devices/{suspended}/retrust", {"json": {"reason": "x"}}, 409, "bad_transition"),
    ],
)
def test_bad_input_to_the_flag_endpoints_is_a_stable_4xx_and_writes_nothing(
    world, method, path, kw, status, code
):
    before = _snapshot(world["db"])
    r = _call(world, method, path.format(**world), **kw)
    assert r.status_code == status, r.json
    assert r.json["error"]["code"] == code
    assert _snapshot(world["db"]) == before


def test_a_read_token_cannot_resolve(world):
    before = _snapshot(world["db"])
    r = _call(
        world, "POST", f"/devices/{world['flagged']}/flags/resolve", "read", json={"reason": "x"}
    )
    assert r.status_code == 403
    assert _snapshot(world["db"]) == before


def _console(world):
    client = world["app"].test_client()
    with world["db"].session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    return client


def test_console_shows_flags_and_refuses_bad_input(world):
    client = _console(world)
    page = client.get(f"/admin/devices/{world['suspended']}").get_data(as_text=True)
    assert "hardware_mismatch" in page and "10.0.0.9" in page and 'id="suspended-note"' in page
    assert 'id="action-resolve_flags"' not in page  # a suspended device is decided, not dismissed
    flagged_page = client.get(f"/admin/devices/{world['flagged']}").get_data(as_text=True)
    assert 'id="action-resolve_flags"' in flagged_page
    assert 'id="count-review">2<' in client.get("/admin/").get_data(as_text=True)
    pending = client.get("/admin/pending").get_data(as_text=True)
    assert world["suspended"] in pending and world["flagged"] in pending
    listed = client.get("/admin/devices?flagged=1").get_data(as_text=True)
    assert world["suspended"] in listed and world["clean"] not in listed
    assert world["suspended"] in client.get("/admin/devices?state=suspended").get_data(as_text=True)
    csrf = csrf_of(flagged_page)
    before = _snapshot(world["db"])
    assert client.get("/admin/devices?flagged=yes").status_code == 400
    for data, status in [
        ({"action": "resolve_flags", "reason": "", "csrf": csrf}, 400),
        ({"action": "resolve_flags", "reason": "x" * 1001, "csrf": csrf}, 400),
        ({"action": "resolve_flags", "reason": "x"}, 403),  # no CSRF token
        ({"action": "unflag", "reason": "x", "csrf": csrf}, 400),
    ]:
        r = client.post(f"/admin/devices/{world['flagged']}/action", data=data)
        assert r.status_code == status, (data, r.status_code)
    r = client.post(
        f"/admin/devices/{world['clean']}/action",
        data={"action": "resolve_flags", "reason": "x", "csrf": csrf},
    )
    assert r.status_code == 409
    assert _snapshot(world["db"]) == before
    # Approving from the console resolves the flags with the admin's reason.
    r = client.post(
        f"/admin/devices/{world['suspended']}/action",
        data={"action": "approve", "reason": "new board", "csrf": csrf},
    )
    assert r.status_code == 303
    with world["db"].session() as s:
        assert s.get(Device, world["suspended"]).state == "trusted"
        (flag,) = detection.open_flags(s, world["flagged"])
        assert detection.open_flags(s, world["suspended"]) == []
        assert s.get(User, s.get(Device, world["flagged"]).user_id) is not None
    r = client.post(
        f"/admin/devices/{world['flagged']}/action",
        data={"action": "resolve_flags", "reason": "known VM", "csrf": csrf},
    )
    assert r.status_code == 303
    with world["db"].session() as s:
        assert detection.open_flags(s, world["flagged"]) == []
        assert s.get(Device, world["flagged"]).state == "trusted"
        event = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "device.flags_reviewed")
        ).one()
        assert event.details["reason"] == "known VM" and event.actor.startswith("admin")
