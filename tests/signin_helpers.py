"""In-process helpers for the sign-in ceremony's unit tests: devices put straight into the
registry, answers built with the real ``trust_protocol`` functions, read-backs of the rows.

Used by ``tests/devices/test_challenges_unit.py``, ``tests/signin/test_store_unit.py`` and
``tests/signin/test_authenticate_unit.py``, which call the service's functions directly
(no service process), so that mutation testing credits them to the code they reach.

``shared_service`` is one service (and database) per test module and backend: making a
PostgreSQL database costs seconds on a loaded machine, far more than these tests' bodies,
and mutation testing runs them once per mutant. Tests on it keep to their own devices,
users and transactions (every helper here makes fresh ones) and read back only those.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from idp_service.devices import challenges
from idp_service.directory import users
from idp_service.platform.models import AuditEvent, Challenge, Device, User, utcnow
from idp_service.services import Services
from idp_service.signin import transactions
from trust_protocol import DeviceKeys, ResponseBody, seal_response

PLATFORM = {"os": "linux"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    """An in-process service on a fresh database, shared by one module's tests (per backend)."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from tests.conftest import _pg_admin, _pg_drop, _pg_url

    tmp: Path = tmp_path_factory.mktemp("signin")
    name = None
    if request.param == "sqlite":
        path = tmp / "devicetrust.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        template = request.getfixturevalue("_pg_template")
        name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        url = _pg_url(name)
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": url,
            "DEVICETRUST_DATA_DIR": str(tmp / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
        }
    )
    app = create_app(settings)
    service: Services = app.extensions["devicetrust"]
    try:
        yield service
    finally:
        service.db.dispose()
        if name is not None:
            _pg_drop(name)


def trusted_device(
    service: Services,
    *,
    state: str = "trusted",
    active: bool = True,
    hardware_uuid: str | None = None,
    serial: str | None = None,
    last_seen: dt.datetime | None = None,
    instances: tuple[str | None, str | None, dt.datetime | None] = (None, None, None),
) -> tuple[DeviceKeys, str]:
    """A device in the registry with a fresh owner; returns its keys and the owner's id."""
    keys = DeviceKeys.generate(str(uuid.uuid4()))
    now = utcnow()
    with service.db.session() as s:
        user = users.create(s, f"u-{uuid.uuid4().hex[:10]}@example.com")
        user.active = active
        s.add(
            Device(
                id=keys.device_id,
                user_id=user.id,
                state=state,
                sign_key=keys.sign_public,
                box_key=keys.box_public,
                hardware_uuid=hardware_uuid,
                serial=serial,
                first_seen=now,
                last_seen=last_seen or now,
                agent_instance=instances[0],
                agent_instance_prev=instances[1],
                agent_instance_at=instances[2],
            )
        )
        s.flush()
        user_id = user.id
    return keys, user_id


def new_txn(service: Services) -> str:
    """A pending login transaction's id."""
    with service.db.session() as s:
        return transactions.create(s, ttl_seconds=600)


def answer(
    service: Services,
    keys: DeviceKeys,
    *,
    binding: str = "test",
    purpose: str = "authenticate",
    platform: dict[str, str] | None = None,
    clock_offset: float = 0.0,
    agent_version: str = "t-1",
    data: dict[str, Any] | None = None,
) -> bytes:
    """The device's sealed answer to a fresh challenge of this server."""
    token, challenge = challenges.issue(service, purpose, binding)
    body = ResponseBody(
        token,
        keys.public_json(),
        PLATFORM if platform is None else platform,
        agent_version,
        time.time() + clock_offset,
        data or {},
    )
    return seal_response(body, challenge, keys)


def challenge_rows(service: Services, device_id: str | None = None) -> list[Challenge]:
    """The recorded challenges (of one device), detached."""
    with service.db.session() as s:
        query = select(Challenge)
        if device_id is not None:
            query = query.where(Challenge.device_id == device_id)
        rows = list(s.scalars(query))
        s.expunge_all()
    return rows


def audit_rows(service: Services, device_id: str | None = None) -> list[AuditEvent]:
    """The audit events (of one device), oldest first, detached."""
    with service.db.session() as s:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if device_id is not None:
            query = query.where(AuditEvent.device_id == device_id)
        rows = list(s.scalars(query))
        s.expunge_all()
    return rows


def device_row(service: Services, device_id: str) -> Device:
    """The device's row as it is now, detached."""
    with service.db.session() as s:
        row = s.get(Device, device_id)
        assert row is not None
        s.expunge(row)
    return row


def count(service: Services, model: type) -> int:
    """Rows in a table."""
    with service.db.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def set_active(service: Services, user_id: str, active: bool) -> None:
    """Activate or deactivate a user."""
    with service.db.session() as s:
        s.get(User, user_id).active = active
