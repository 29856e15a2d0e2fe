"""The service's key material in one passphrase-protected file: ``devicetrust keys export|import``.

For moving the service to new hardware and for disaster recovery. The file holds
every secret the service cannot make again without breaking something:

* from the database (``server_secrets``): the protocol signing seed and box secret
  (agents answer challenges under them), the session key, the SAML persistent-NameID
  secret and the approval-code key; and every SAML signing key (``saml_signing_keys``,
  private keys and certificates: SPs trust these certificates);
* from outside the database: the audit key (row MACs and the chain) and the audit
  checkpoint signing key, from ``DEVICETRUST_AUDIT_KEY`` / ``..._CHECKPOINT_KEY`` or
  their files in the data directory.

Sealing: the passphrase is stretched with Argon2id (libsodium's ``crypto_pwhash``,
the MODERATE limits: 3 passes over 256 MiB) with a random salt, and the JSON
bundle is encrypted and authenticated with XSalsa20-Poly1305 (``SecretBox``), both
through PyNaCl. The file says which limits it was made with, so it opens after
the defaults change. A wrong passphrase or a changed byte opens nothing.

Import writes nothing unless it can write everything: a secret that exists with a
different value is a conflict, and the whole import is refused unless ``replace``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl import pwhash, secret, utils
from nacl.exceptions import CryptoError
from sqlalchemy import text

from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict, Invalid

FORMAT = "devicetrust-keys/1"
MIN_PASSPHRASE = 12
AUDIT_FILES = {
    "audit.key": "DEVICETRUST_AUDIT_KEY",
    "audit-checkpoint.key": "DEVICETRUST_AUDIT_CHECKPOINT_KEY",
}
_SAML_COLUMNS = (
    "id",
    "key_type",
    "status",
    "active_slot",
    "next_slot",
    "private_key_pem",
    "cert_pem",
    "not_after",
    "created_at",
    "activated_at",
    "retired_at",
)
_TIMES = ("not_after", "created_at", "activated_at", "retired_at")
# Built from the fixed column names above, never from input.
_SAML_SELECT = "SELECT " + ", ".join(_SAML_COLUMNS) + " FROM saml_signing_keys"  # noqa: S608
_SAML_INSERT = "INSERT INTO saml_signing_keys ({}) VALUES ({})".format(  # noqa: S608
    ", ".join(_SAML_COLUMNS), ", ".join(f":{c}" for c in _SAML_COLUMNS)
)


@dataclass(frozen=True)
class Change:
    """One item of an import: ``what`` (e.g. ``server_secrets/flask.session_key``) and
    ``action`` (``added``, ``unchanged``, ``replaced``, ``conflict``, ``environment``)."""

    what: str
    action: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text_: str) -> bytes:
    return base64.b64decode(text_.encode(), validate=True)


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return str(value.isoformat())


def _audit_key_text(data_dir: Path, name: str, env: dict[str, str]) -> str | None:
    variable = AUDIT_FILES[name]
    if env.get(variable, "").strip():
        return env[variable].strip().lower()
    path = data_dir / name
    return path.read_text().strip().lower() if path.exists() else None


def collect(db: Database, data_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything :func:`seal` protects, as a JSON-able bundle."""
    env = dict(os.environ if env is None else env)
    with db.engine.connect() as conn:
        secrets_ = {
            row.name: _b64(bytes(row.material))
            for row in conn.execute(text("SELECT name, material FROM server_secrets ORDER BY name"))
        }
        saml = []
        for row in conn.execute(text(_SAML_SELECT + " ORDER BY created_at, id")).mappings():
            item = dict(row)
            item["private_key_pem"] = _b64(bytes(item["private_key_pem"]))
            for key in _TIMES:
                item[key] = _time(item[key])
            saml.append(item)
    files = {}
    for name in AUDIT_FILES:
        value = _audit_key_text(data_dir, name, env)
        if value is not None:
            files[name] = value
    return {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "server_secrets": secrets_,
        "saml_signing_keys": saml,
        "audit_keys": files,
    }


def _check_passphrase(passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise Invalid(
            "weak_passphrase", f"the passphrase must be at least {MIN_PASSPHRASE} characters"
        )
    return passphrase.encode()


def seal(
    bundle: dict[str, Any],
    passphrase: str,
    *,
    opslimit: int = pwhash.argon2id.OPSLIMIT_MODERATE,
    memlimit: int = pwhash.argon2id.MEMLIMIT_MODERATE,
) -> bytes:
    """The bundle encrypted under ``passphrase`` (Argon2id, then SecretBox), as file bytes."""
    salt = utils.random(pwhash.argon2id.SALTBYTES)
    key = pwhash.argon2id.kdf(
        secret.SecretBox.KEY_SIZE, _check_passphrase(passphrase), salt, opslimit, memlimit
    )
    box = secret.SecretBox(key).encrypt(json.dumps(bundle).encode())
    header = {
        "format": FORMAT,
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": _b64(salt),
        "box": _b64(bytes(box)),
    }
    return (json.dumps(header, indent=1) + "\n").encode()


def unseal(blob: bytes, passphrase: str) -> dict[str, Any]:
    """The bundle in a file made by :func:`seal`; :class:`Invalid` if it does not open."""
    try:
        header = json.loads(blob)
        if header.get("format") != FORMAT or header.get("kdf") != "argon2id":
            raise ValueError("format")
        opslimit, memlimit = int(header["opslimit"]), int(header["memlimit"])
        # Bounds, so a hostile file cannot ask for unbounded work or memory.
        if not (1 <= opslimit <= 16 and 8192 <= memlimit <= 4 * 1024**3):
            raise ValueError("limits")
        salt, box = _unb64(header["salt"]), _unb64(header["box"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Invalid("not_a_key_file", "this is not a devicetrust key file") from None
    key = pwhash.argon2id.kdf(
        secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit, memlimit
    )
    try:
        plain = secret.SecretBox(key).decrypt(box)
    except CryptoError:
        raise Invalid(
            "wrong_passphrase", "wrong passphrase, or the file was changed or damaged"
        ) from None
    bundle: dict[str, Any] = json.loads(plain)
    if bundle.get("format") != FORMAT:
        raise Invalid("not_a_key_file", "this is not a devicetrust key file")
    return bundle


def restore(
    db: Database,
    data_dir: Path,
    bundle: dict[str, Any],
    *,
    replace: bool = False,
    env: dict[str, str] | None = None,
) -> list[Change]:
    """Put the bundle's keys in place: the database rows, and the audit key files.

    Nothing is written when any item conflicts and ``replace`` is false
    (:class:`Conflict` lists them). An audit key set in the environment is not written
    to a file: the change says ``environment`` (same) or ``conflict`` (different).
    """
    env = dict(os.environ if env is None else env)
    changes: list[Change] = []
    with db.engine.connect() as conn:
        have = {
            row.name: bytes(row.material)
            for row in conn.execute(text("SELECT name, material FROM server_secrets"))
        }
        saml_have = {
            row.id: bytes(row.private_key_pem)
            for row in conn.execute(text("SELECT id, private_key_pem FROM saml_signing_keys"))
        }
    secret_rows = {name: _unb64(value) for name, value in bundle["server_secrets"].items()}
    for name, material in secret_rows.items():
        changes.append(Change(f"server_secrets/{name}", _compare(have.get(name), material)))
    for item in bundle["saml_signing_keys"]:
        pem = _unb64(item["private_key_pem"])
        changes.append(
            Change(f"saml_signing_keys/{item['id']}", _compare(saml_have.get(item["id"]), pem))
        )
    for name, value in bundle["audit_keys"].items():
        if env.get(AUDIT_FILES[name], "").strip():
            same = env[AUDIT_FILES[name]].strip().lower() == value
            changes.append(Change(f"audit/{name}", "environment" if same else "conflict"))
            continue
        path = data_dir / name
        current = path.read_text().strip().lower() if path.exists() else None
        changes.append(
            Change(f"audit/{name}", _compare(current.encode() if current else None, value.encode()))
        )
    conflicts = [c.what for c in changes if c.action == "conflict"]
    if conflicts and (
        not replace or any(c.startswith("audit/") and AUDIT_FILES[c[6:]] in env for c in conflicts)
    ):
        raise Conflict(
            "key_conflict",
            "these keys exist here with other values: "
            + ", ".join(conflicts)
            + (
                "; an audit key set in the environment must be changed there"
                if replace
                else "; run again with --replace to overwrite them"
            ),
        )
    _write(db, data_dir, bundle, secret_rows, changes)
    return [Change(c.what, "replaced" if c.action == "conflict" else c.action) for c in changes]


def _compare(current: bytes | None, wanted: bytes) -> str:
    if current is None:
        return "added"
    return "unchanged" if current == wanted else "conflict"


def _write(
    db: Database,
    data_dir: Path,
    bundle: dict[str, Any],
    secret_rows: dict[str, bytes],
    changes: list[Change],
) -> None:
    todo = {c.what for c in changes if c.action in ("added", "conflict")}
    saml_changed = False
    with db.engine.begin() as conn:
        for name, material in secret_rows.items():
            if f"server_secrets/{name}" not in todo:
                continue
            conn.execute(text("DELETE FROM server_secrets WHERE name = :name"), {"name": name})
            conn.execute(
                text(
                    "INSERT INTO server_secrets (name, material, created_at) "
                    "VALUES (:name, :material, :now)"
                ),
                {"name": name, "material": material, "now": dt.datetime.now(dt.UTC)},
            )
        for item in bundle["saml_signing_keys"]:
            if f"saml_signing_keys/{item['id']}" not in todo:
                continue
            saml_changed = True
            values = dict(item)
            values["private_key_pem"] = _unb64(item["private_key_pem"])
            for key in _TIMES:
                if values[key] is not None:
                    values[key] = dt.datetime.fromisoformat(values[key])
            conn.execute(text("DELETE FROM saml_signing_keys WHERE id = :id"), {"id": item["id"]})
            if values["active_slot"] is not None or values["next_slot"] is not None:
                # The imported key takes its slot: the key holding it here steps aside.
                conn.execute(
                    text(
                        "UPDATE saml_signing_keys SET status = 'previous', active_slot = NULL "
                        "WHERE active_slot = :slot"
                    ),
                    {"slot": values["active_slot"] or "-"},
                )
                conn.execute(
                    text(
                        "UPDATE saml_signing_keys SET status = 'retired', next_slot = NULL "
                        "WHERE next_slot = :slot"
                    ),
                    {"slot": values["next_slot"] or "-"},
                )
            conn.execute(text(_SAML_INSERT), values)
        if saml_changed:
            # Every process reloads its key ring when the generation moves (saml/keys.py).
            bumped = conn.execute(
                text("UPDATE saml_key_generation SET generation = generation + 1 WHERE id = 1")
            ).rowcount
            if not bumped:
                conn.execute(text("INSERT INTO saml_key_generation (id, generation) VALUES (1, 1)"))
    for name, value in bundle["audit_keys"].items():
        if f"audit/{name}" not in todo:
            continue
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / name
        tmp = path.with_suffix(".import")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        os.replace(tmp, path)
