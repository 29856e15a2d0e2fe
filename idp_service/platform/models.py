"""Tables of the service.

Other surfaces (SCIM, posture, admin) add their tables in their own modules of
this package and their own Alembic revisions; every table hangs off
:class:`Base` so one metadata describes the whole schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    """Timezone-aware now, the only clock the models use."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every database.

    SQLite has no time zones, so values are stored there as naive UTC and given
    their zone back on the way out; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use utcnow()")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every devicetrust table."""

    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


def table_of(model: type[Base]) -> Table:
    """A mapped class's :class:`~sqlalchemy.Table`, for Core statements (SQLAlchemy types
    ``__table__`` as any FROM clause, which ``insert()``/``update()``/``delete()`` refuse)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


# ``suspended`` is set by the system only (clone detection, ``idp_service/devices/detection.py``);
# an admin then approves, denies or revokes.
DEVICE_STATES = ("pending", "trusted", "denied", "revoked", "suspended")


class User(Base):
    """A person who may own devices. Provisioned by SCIM, or by the CLI."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(256))
    # userName is unique without regard to case (SCIM); the lower-cased copy enforces it.
    user_name_lower: Mapped[str] = mapped_column(String(256), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    display_name: Mapped[str | None] = mapped_column(String(256))
    external_id: Mapped[str | None] = mapped_column(String(256), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The full SCIM resource as last written, so SCIM reads return what clients sent.
    scim_resource: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deactivated_at: Mapped[dt.datetime | None]
    # Set when SCIM deleted the user: the row stays (devices and audit refer to it),
    # inactive, with user_name_lower released (revision 0002, scim/lifecycle.py).
    deleted_at: Mapped[dt.datetime | None]


class Device(Base):
    """A device known to the registry, with its public keys and hardware identifiers."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    sign_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    box_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    hardware_uuid: Mapped[str | None] = mapped_column(String(256), index=True)
    serial: Mapped[str | None] = mapped_column(String(256), index=True)
    hostname: Mapped[str | None] = mapped_column(String(256))
    platform: Mapped[str | None] = mapped_column(String(32))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_clock_skew: Mapped[float | None] = mapped_column(Float)
    # The agent process instances that answered last (detection.py: two agents, one id):
    # the current one, the one before it, and when the current one took over.
    agent_instance: Mapped[str | None] = mapped_column(String(64))
    agent_instance_prev: Mapped[str | None] = mapped_column(String(64))
    agent_instance_at: Mapped[dt.datetime | None]
    # Report ceremony v2 (devices/report_v2.py): the last accepted counter, the digest of
    # the fact document the service holds for the device (None: ask for it whole), and
    # when a report last confirmed that document current (an unchanged report writes no facts).
    report_counter: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    report_digest: Mapped[str | None] = mapped_column(String(64))
    facts_confirmed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Challenge(Base):
    """One *answered* challenge. Its primary key makes each challenge single use.

    Challenges are not stored when issued (they are signed statements); the row
    is written by the first accepted answer, and a second answer collides.
    """

    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)  # base64url of the id
    purpose: Mapped[str] = mapped_column(String(16))
    binding: Mapped[str] = mapped_column(String(256), index=True)
    issued_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)  # rows past it may be purged
    consumed_at: Mapped[dt.datetime]
    consumed_via: Mapped[str | None] = mapped_column(String(16))  # browser | callback | agent
    device_id: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(String(32))  # ok or a protocol error code


class LoginTransaction(Base):
    """One sign-in attempt: the page, the challenge and its outcome are tied to it.

    The SAML surface stores the AuthnRequest context in ``context``.
    """

    __tablename__ = "login_transactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|verified|denied
    error_code: Mapped[str | None] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    verified_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]


class EnrollmentCode(Base):
    """A one-time code that binds the next device registering with it to a user."""

    __tablename__ = "enrollment_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    device_id: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(256))


class ServerSecret(Base):
    """Key material shared by all replicas (signing key seed, box secret)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    material: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """An append-only record of a decision. Never updated, never deleted."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)  # page by id: ids grow with time
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | rejected | error
    code: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(256))
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Tamper evidence (idp_service/platform/audit_chain.py): a keyed MAC written with the row,
    # and the chain position and hash the sealer gives it.
    mac: Mapped[str | None] = mapped_column(String(64))
    chain_seq: Mapped[int | None] = mapped_column(Integer, index=True, unique=True)
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    # The chain scheme the link was computed under: 2 is the keyed chain; NULL rows
    # were sealed by the unkeyed chain of 0007 and are re-sealed on the next seal.
    chain_version: Mapped[int | None] = mapped_column(Integer)


class AuditCheckpoint(Base):
    """A signed statement of the audit chain's head (idp_service/platform/audit_chain.py).

    ``payload`` is the exact canonical JSON that was signed; ``seq`` and ``kind``
    repeat two of its fields for queries (and for the trigger that lets retention
    pruning delete rows only up to a ``prune`` checkpoint). Never updated, never deleted.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
