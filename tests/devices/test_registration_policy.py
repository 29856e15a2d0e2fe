"""Registration-policy resolution: the pure rule, the group walk, and config validation."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp_service.devices.registration_policy import (
    POLICIES,
    STRICTNESS,
    Resolution,
    check_policy,
    effective,
    group_depths,
    resolve,
    set_global,
    set_group,
)
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.config import Settings
from idp_service.platform.errors import NotFound, ServiceError
from idp_service.platform.models import User

ENV = Resolution("tofu", "env")


def test_no_group_policy_means_the_global_one():
    assert resolve(ENV, {}, {}) == ENV
    assert resolve(ENV, {"g": "admin_approval"}, {"other": 1}) == ENV  # not a member of g


def test_direct_beats_nested_beats_global():
    depths = {"team": 1, "dept": 2, "company": 3}
    policies = {"dept": "admin_approval", "team": "tofu"}
    assert resolve(ENV, policies, depths) == Resolution("tofu", "group:team")
    assert resolve(ENV, {"company": "tofu", "dept": "trusted_device_approval"}, depths) == (
        Resolution("trusted_device_approval", "group:dept")
    )


def test_ties_at_one_depth_go_to_the_strictest():
    depths = {"a": 1, "b": 1, "c": 1}
    policies = {"a": "tofu", "b": "admin_approval", "c": "trusted_device_approval"}
    assert resolve(ENV, policies, depths) == Resolution("admin_approval", "group:b")
    policies = {"a": "tofu", "c": "trusted_device_approval"}
    assert resolve(ENV, policies, depths) == Resolution("trusted_device_approval", "group:c")


names = st.text("abcdefgh", min_size=1, max_size=3)


@given(
    st.dictionaries(names, st.integers(1, 6), max_size=8),
    st.dictionaries(names, st.sampled_from(POLICIES), max_size=8),
    st.sampled_from(POLICIES),
)
def test_resolution_properties(depths, policies, default):
    got = resolve(Resolution(default, "global"), policies, depths)
    applicable = {g: d for g, d in depths.items() if g in policies}
    if not applicable:
        assert got == Resolution(default, "global")
        return
    group = got.source.removeprefix("group:")
    assert group in applicable and policies[group] == got.policy
    nearest = min(applicable.values())
    assert applicable[group] == nearest  # the most specific depth wins...
    same_depth = [policies[g] for g, d in applicable.items() if d == nearest]
    assert STRICTNESS[got.policy] == max(STRICTNESS[p] for p in same_depth)  # ...then strictest
    # Order of the inputs never matters.
    assert (
        resolve(
            Resolution(default, "global"),
            dict(reversed(policies.items())),
            dict(reversed(depths.items())),
        )
        == got
    )


def test_check_policy_refuses_anything_else():
    for bad in ("", "TOFU", "admin", None, 3):
        with pytest.raises(ServiceError) as exc:
            check_policy(bad)
        assert exc.value.code == "bad_policy"


def test_the_environment_value_is_validated_at_start():
    assert Settings.from_env({"DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval"})
    with pytest.raises(ValueError, match="DEVICETRUST_REGISTRATION_POLICY='tofo' is not a policy"):
        Settings.from_env({"DEVICETRUST_REGISTRATION_POLICY": "tofo"})
    with pytest.raises(ValueError, match="APPROVAL_ATTEMPTS"):
        Settings.from_env({"DEVICETRUST_APPROVAL_ATTEMPTS": "0"})
    s = Settings.from_env({"DEVICETRUST_APPROVAL_CODE_TTL": "3"})
    assert s.approval_code_ttl == 180 and s.approval_attempts == 5


def _group(s, name: str) -> str:
    gid = str(uuid.uuid4())
    s.add(Group(id=gid, display_name=name, display_name_key=name.casefold()))
    s.flush()
    return gid


def test_depths_and_effective_policy_on_the_database(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    uid = str(uuid.uuid4())
    with db.session() as s:
        s.add(User(id=uid, user_name="u@example.com", user_name_lower="u@example.com"))
        team, dept, company, loop = (_group(s, n) for n in ("team", "Dept", "company", "loop"))
        for parent, child, kind in (
            (team, uid, "User"),
            (dept, team, "Group"),
            (company, dept, "Group"),
            (company, uid, "User"),  # also direct: depth 1 wins
            (loop, company, "Group"),
            (team, loop, "Group"),  # a cycle
        ):
            s.add(GroupMember(group_id=parent, value=child, type=kind))
    with db.session() as s:
        assert group_depths(s, uid) == {team: 1, company: 1, dept: 2, loop: 2}
        assert effective(s, "tofu", uid) == Resolution("tofu", "env")
        set_global(s, "admin_approval", actor="test", env_default="tofu")
        assert effective(s, "tofu", uid) == Resolution("admin_approval", "global")
        set_group(s, "DEPT", "tofu", actor="test", env_default="tofu")  # by displayName
        assert effective(s, "tofu", uid) == Resolution("tofu", f"group:{dept}")
        set_group(s, company, "trusted_device_approval", actor="test", env_default="tofu")
        assert effective(s, "tofu", uid) == Resolution(
            "trusted_device_approval", f"group:{company}"
        )
        with pytest.raises(ServiceError) as exc:
            set_group(s, "nope", "tofu", actor="test", env_default="tofu")
        assert exc.value.code == "group_not_found" and isinstance(exc.value, NotFound)


def test_a_bad_policy_stops_the_service_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    from tests.procs import base_env

    env = base_env(
        DEVICETRUST_REGISTRATION_POLICY="trust_everyone",
        DEVICETRUST_DATA_DIR=str(tmp_path),
    )
    out = subprocess.run(
        [sys.executable, "-m", "idp_service", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "DEVICETRUST_REGISTRATION_POLICY='trust_everyone' is not a policy" in out.stderr
    assert "Traceback" not in out.stderr


def test_two_admins_setting_a_new_scope_at_once_both_succeed(service_ctx):
    """The second insert of a brand-new scope waits for the first, collides, and updates."""
    import threading

    from sqlalchemy import select

    from idp_service.devices.approval_tables import RegistrationPolicy
    from idp_service.platform.models import AuditEvent

    db = service_ctx.extensions["devicetrust"].db
    transaction = db.session()
    first = transaction.__enter__()
    set_global(
        first, "admin_approval", actor="first", env_default="tofu"
    )  # inserted, not committed
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with db.session() as s:
                outcome["result"] = set_global(s, "tofu", actor="second", env_default="tofu")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome["error"] = exc

    from sqlalchemy import event

    inserting = threading.Event()

    def _saw(_conn, _cursor, statement, _params, _context, _many) -> None:
        words = statement.split(None, 3)[:3]
        if threading.current_thread() is thread and words[0].upper() in ("INSERT", "UPDATE"):
            if "registration_policies" in words:
                inserting.set()

    thread = threading.Thread(target=second)
    event.listen(db.engine, "before_cursor_execute", _saw)
    try:
        thread.start()
        # The second write has been sent: it now waits for the first transaction
        # (a row lock on PostgreSQL, SQLite's write lock) and can't finish before it.
        assert inserting.wait(30)
        assert thread.is_alive()
    finally:
        event.remove(db.engine, "before_cursor_execute", _saw)
    transaction.__exit__(None, None, None)  # commit
    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["before"] == "admin_approval"
    with db.session() as s:
        row = s.get(RegistrationPolicy, "global")
        assert (row.policy, row.updated_by) == ("tofu", "second")
        actors = s.scalars(
            select(AuditEvent.actor)
            .where(AuditEvent.action == "policy.set")
            .order_by(AuditEvent.id)
        ).all()
        assert actors == ["first", "second"]
