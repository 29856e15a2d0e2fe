"""`devicetrust keys export|import`: the service's key material moved to another database
and data directory under a passphrase (Argon2id + SecretBox), refused with a wrong
passphrase or a changed byte, and never overwriting different keys unless asked."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from idp_service import key_backup
from idp_service.cli import cli
from idp_service.platform import audit_chain
from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict, Invalid
from idp_service.platform.keys import SESSION_KEY, load_secret, load_server_keys
from idp_service.saml import keys as saml_keys

PASSPHRASE = "correct horse battery staple"


def _populate(url: str, data_dir: Path) -> Database:
    """A service's key material, made the way the service makes it."""
    db = Database(url)
    load_server_keys(db)
    load_secret(db, SESSION_KEY)
    saml_keys.ensure_active(db, "rsa")
    audit_chain.load_key(data_dir, env={})
    audit_chain.load_checkpoint_key(data_dir, env={})
    return db


def _rows(db: Database) -> tuple[dict, dict]:
    with db.engine.connect() as conn:
        secrets_ = {
            r.name: bytes(r.material)
            for r in conn.execute(text("SELECT name, material FROM server_secrets"))
        }
        saml = {
            r.id: (bytes(r.private_key_pem), r.cert_pem, r.status, r.active_slot)
            for r in conn.execute(
                text(
                    "SELECT id, private_key_pem, cert_pem, status, active_slot FROM "
                    + "saml_signing_keys"
                )
            )
        }
    return secrets_, saml


def _run(args: list[str], url: str, data_dir: Path, passfile: Path):
    env = {
        "DEVICETRUST_DATABASE_URL": url,
        "DEVICETRUST_DATA_DIR": str(data_dir),
        "DEVICETRUST_AUDIT_KEY": "",
        "DEVICETRUST_AUDIT_CHECKPOINT_KEY": "",
        "DEVICETRUST_CONFIG": None,
        "DEVICETRUST_ENV": None,
    }
    return CliRunner().invoke(
        cli, ["keys", *args, "--passphrase-file", str(passfile)], env=env, catch_exceptions=False
    )


@pytest.mark.postgres
def test_export_then_import_moves_every_key(tmp_path, sqlite_url, postgres_url):
    source_dir, target_dir = tmp_path / "old", tmp_path / "new"
    source = _populate(sqlite_url, source_dir)
    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    out = tmp_path / "devicetrust.keys"

    result = _run(["export", str(out)], sqlite_url, source_dir, passfile)
    assert result.exit_code == 0, result.output
    assert "SAML signing keys, 2 audit keys" in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    sealed = out.read_bytes()
    secrets_, saml = _rows(source)
    for material in secrets_.values():  # nothing readable in the file
        assert base64.b64encode(material) not in sealed and material.hex().encode() not in sealed
    assert (source_dir / "audit.key").read_text().strip().encode() not in sealed
    # A second export does not overwrite the first by accident.
    again = _run(["export", str(out)], sqlite_url, source_dir, passfile)
    assert again.exit_code == 1 and "exists" in again.output

    result = _run(["import", str(out), "--json"], postgres_url, target_dir, passfile)
    assert result.exit_code == 0, result.output
    actions = {c["what"]: c["action"] for c in json.loads(result.output)}
    assert set(actions.values()) == {"added"}
    assert {f"server_secrets/{n}" for n in secrets_} <= set(actions)
    target = Database(postgres_url)
    assert _rows(target) == (secrets_, saml)
    for name in ("audit.key", "audit-checkpoint.key"):
        assert (target_dir / name).read_text() == (source_dir / name).read_text()
        assert stat.S_IMODE((target_dir / name).stat().st_mode) == 0o600
    # The new place signs with the same SAML key and answers with the same protocol keys.
    ring = saml_keys.KeyRing(target)
    old_cert = next(c for (_, c, s, _) in saml.values() if s == "active")
    assert ring.active("rsa").cert_pem == old_cert
    assert bytes(load_server_keys(target).verify_key) == bytes(load_server_keys(source).verify_key)

    # Importing the same file again changes nothing.
    result = _run(["import", str(out), "--json"], postgres_url, target_dir, passfile)
    assert {c["action"] for c in json.loads(result.output)} == {"unchanged"}


def test_a_wrong_passphrase_a_changed_byte_or_a_weak_passphrase_opens_nothing(tmp_path, sqlite_url):
    db = _populate(sqlite_url, tmp_path / "data")
    bundle = key_backup.collect(db, tmp_path / "data", env={})
    fast = {"opslimit": 2, "memlimit": 64 * 1024 * 1024}
    sealed = key_backup.seal(bundle, PASSPHRASE, **fast)
    assert key_backup.unseal(sealed, PASSPHRASE) == bundle
    with pytest.raises(Invalid) as wrong:
        key_backup.unseal(sealed, PASSPHRASE + "!")
    assert wrong.value.code == "wrong_passphrase"
    header = json.loads(sealed)
    box = bytearray(base64.b64decode(header["box"]))
    box[40] ^= 1
    header["box"] = base64.b64encode(bytes(box)).decode()
    with pytest.raises(Invalid) as changed:
        key_backup.unseal(json.dumps(header).encode(), PASSPHRASE)
    assert changed.value.code == "wrong_passphrase"
    for hostile in (b"", b"{}", b"[1]", json.dumps({**header, "memlimit": 2**40}).encode()):
        with pytest.raises(Invalid) as refused:
            key_backup.unseal(hostile, PASSPHRASE)
        assert refused.value.code == "not_a_key_file"
    with pytest.raises(Invalid) as weak:
        key_backup.seal(bundle, "short", **fast)
    assert weak.value.code == "weak_passphrase"


def test_different_keys_are_a_conflict_unless_replace(tmp_path, sqlite_url):
    old = _populate(sqlite_url, tmp_path / "old")
    bundle = key_backup.collect(old, tmp_path / "old", env={})
    other_url = sqlite_url.replace("devicetrust.db", "other.db")
    from idp_service.platform.migrate import upgrade

    upgrade(other_url)
    other = _populate(other_url, tmp_path / "other")  # its own, different keys
    before = _rows(other)
    audit_before = (tmp_path / "other" / "audit.key").read_text()
    with pytest.raises(Conflict) as caught:
        key_backup.restore(other, tmp_path / "other", bundle, env={})
    assert "server_secrets/protocol.signing_seed" in caught.value.message
    assert "audit/audit.key" in caught.value.message and "--replace" in caught.value.message
    assert _rows(other) == before  # nothing written
    assert (tmp_path / "other" / "audit.key").read_text() == audit_before

    changes = key_backup.restore(other, tmp_path / "other", bundle, replace=True, env={})
    assert "replaced" in {c.action for c in changes}
    secrets_, saml = _rows(other)
    assert secrets_ == _rows(old)[0]
    assert set(_rows(old)[1]) <= set(saml)
    actives = [row for row in saml.values() if row[3] == "rsa"]
    assert len(actives) == 1 and actives[0] == _rows(old)[1][next(iter(_rows(old)[1]))]
    assert (tmp_path / "other" / "audit.key").read_text() == (
        tmp_path / "old" / "audit.key"
    ).read_text()
    # An audit key the environment sets is never written to a file.
    env = {"DEVICETRUST_AUDIT_KEY": "ab" * 32}
    with pytest.raises(Conflict) as in_env:
        key_backup.restore(other, tmp_path / "other", bundle, replace=True, env=env)
    assert "must be changed there" in in_env.value.message
    assert os.environ.get("DEVICETRUST_KEYS_PASSPHRASE") is None
