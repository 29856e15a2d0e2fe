"""The reads of the sign-in hot path: a login transaction, with its user and device; a
device's owner.

One statement each, on the driver connection (``platform/driver.py``). The
results are detached ORM instances built from the row (``driver.detached_loader``).
"""

from __future__ import annotations

from sqlalchemy import Engine

from idp_service.platform.driver import detached_loader, driver
from idp_service.platform.models import Device, LoginTransaction, User

_TXN_NAMES, _load_txn = detached_loader(LoginTransaction)
_USER_NAMES, _load_user = detached_loader(User, skip=("scim_resource",))  # never needed to sign in
_DEVICE_NAMES, _load_device = detached_loader(Device)
# Column names come from the models, never from input.
_READ_TXN = f"SELECT {', '.join(_TXN_NAMES)} FROM login_transactions WHERE id = "  # noqa: S608
_READ_LOGIN = (
    f"SELECT {', '.join('t.' + n for n in _TXN_NAMES)},"  # noqa: S608
    f" {', '.join('u.' + n for n in _USER_NAMES)}, {', '.join('d.' + n for n in _DEVICE_NAMES)}"
    " FROM login_transactions t LEFT JOIN users u ON u.id = t.user_id"
    " LEFT JOIN devices d ON d.id = t.device_id WHERE t.id = "
)


def read_transaction(engine: Engine, txn_id: str) -> LoginTransaction | None:
    """The transaction as it is now (one statement), detached from any session."""
    with driver(engine) as (conn, is_pg):
        row = conn.execute(_READ_TXN + ("%s" if is_pg else "?"), (txn_id,)).fetchone()
    return _load_txn(row) if row is not None else None


def read_login(
    engine: Engine, txn_id: str
) -> tuple[LoginTransaction, User | None, Device | None] | None:
    """The transaction with its user and device as they are now (one statement), detached.

    The instances are transient snapshots for reading; they are not attached to a
    session and must not be added to one.
    """
    with driver(engine) as (conn, is_pg):
        row = conn.execute(_READ_LOGIN + ("%s" if is_pg else "?"), (txn_id,)).fetchone()
    if row is None:
        return None
    t, u = len(_TXN_NAMES), len(_TXN_NAMES) + len(_USER_NAMES)
    user = _load_user(row[t:u]) if row[t + _USER_NAMES.index("id")] is not None else None
    device = _load_device(row[u:]) if row[u + _DEVICE_NAMES.index("id")] is not None else None
    return _load_txn(row[:t]), user, device


_READ_OWNER = "SELECT user_id FROM devices WHERE id = ?"
_READ_OWNER_PG = "SELECT user_id FROM devices WHERE id = %s"


def read_owner(engine: Engine, device_id: str) -> str | None:
    """The user id of the device's owner, or None for an unknown device (one statement)."""
    with driver(engine) as (conn, is_pg):
        row = conn.execute(_READ_OWNER_PG if is_pg else _READ_OWNER, (device_id,)).fetchone()
    return row[0] if row is not None else None


class DeviceOwners:
    """Device id -> owner's user id, remembered per process.

    The answer's write carries its audit row's MAC, which covers the owner, so the
    owner must be known before the write. This is only a hint: the write itself
    requires the device to belong to that user, so a stale entry costs a refused
    write and one retry with a fresh read, never a wrong row.
    """

    LIMIT = 100_000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._owners: dict[str, str] = {}

    def remembered(self, device_id: str) -> str | None:
        """The owner last read for this device, if any."""
        return self._owners.get(device_id)

    def read(self, device_id: str) -> str | None:
        """The owner as the database has it now (None for an unknown device); remembered."""
        owner = read_owner(self.engine, device_id)
        if owner is None:
            self._owners.pop(device_id, None)
            return None
        if len(self._owners) >= self.LIMIT:
            self._owners.clear()
        self._owners[device_id] = owner
        return owner
