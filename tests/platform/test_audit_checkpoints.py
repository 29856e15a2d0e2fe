"""The audit log survives whoever can write the database: a keyed chain, signed checkpoints
kept outside it, retention pruning, restores and the re-seal of old chains. SQLite and
PostgreSQL.

The attacker here has the table owner's rights (triggers out of the way) and, unless a
test says otherwise, not the audit key: they recompute the chain with a key of their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from idp_service.platform import audit, audit_chain
from idp_service.platform.models import AuditCheckpoint, AuditEvent, utcnow

ATTACKER_KEY = b"attacker" * 4


def _db(app):
    return app.extensions["devicetrust"].db


def _file(app):
    return audit_chain.current_checkpoint_file()


def _events(app, n, action="test.event"):
    with _db(app).session() as s:
        for i in range(n):
            audit.record(s, action, "ok", actor="tester", details={"i": i})


def _file_lines(app):
    lines, problems = audit_chain.read_checkpoint_file(_file(app))
    assert problems == []
    return lines


def _untriggered(app, *statements):
    """Run statements as the table owner, with the append-only triggers out of the way."""
    db = _db(app)
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER"))
        else:
            for name in (
                "audit_events_no_delete",
                "audit_events_seal_only",
                "audit_checkpoints_no_delete",
                "audit_checkpoints_append_only",
            ):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))  # fmt: skip
        for sql, params in statements:
            conn.execute(text(sql), params)
        if db.is_postgres:
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE audit_checkpoints ENABLE TRIGGER USER"))


def _relink(app, key=ATTACKER_KEY, order=None, from_seq=None):
    """Renumber the rows 1..n in chain order (or ``order``, a list of row ids) and recompute
    the links from the first row whose position changed (or ``from_seq``), with ``key``:
    what a database writer does to hide a change (earlier rows keep their genuine links)."""
    db = _db(app)
    audit_chain.seal(db)
    with db.session() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.chain_seq)))
        if order is not None:
            by_id = {r.id: r for r in rows}
            rows = [by_id[i] for i in order]
        values = [(r.id, r.chain_seq, r.chain_hash, audit_chain.row_values(r)) for r in rows]
    statements = []
    previous, changed = audit_chain.GENESIS, False
    for seq, (row_id, old_seq, old_hash, row_values) in enumerate(values, 1):
        changed = changed or old_seq != seq or (from_seq is not None and seq >= from_seq)
        if not changed:
            previous = old_hash
            continue
        previous = audit_chain.chain_link(key, previous, seq, row_values)
        statements.append(
            ("UPDATE audit_events SET chain_seq = :seq, chain_hash = :h WHERE id = :id",
             {"seq": seq, "h": previous, "id": row_id})
        )  # fmt: skip
    moved = [p["id"] for _, p in statements]
    _untriggered(
        app,
        (f"UPDATE audit_events SET chain_seq = -id WHERE id IN ({','.join(map(str, moved))})",
         {}),
        *statements,
    )  # fmt: skip


def _seq_of(app, action):
    with _db(app).session() as s:
        return s.execute(
            select(AuditEvent.id, AuditEvent.chain_seq).where(AuditEvent.action == action)
        ).one()


# -- attacks -------------------------------------------------------------------------------
def test_deleted_row_relinked_without_the_key_is_detected_at_the_gap(service_ctx):
    _events(service_ctx, 5)
    _events(service_ctx, 1, action="device.delete")  # the attacker's own action
    _events(service_ctx, 5)
    audit_chain.seal(_db(service_ctx))
    row_id, seq = _seq_of(service_ctx, "device.delete")
    _untriggered(service_ctx, ("DELETE FROM audit_events WHERE id = :id", {"id": row_id}))
    _relink(service_ctx)  # no gap in chain_seq any more, every link recomputed
    report = audit_chain.verify(_db(service_ctx))
    assert not report.ok
    assert report.problems[0].startswith(f"row id {row_id + 1} (chain {seq}) breaks the chain")
    assert "removed, inserted or moved" in report.problems[0]


def test_deleted_row_relinked_with_the_key_is_caught_by_a_checkpoint(service_ctx):
    """A writer who also holds the audit key can relink the chain; the checkpoint they
    cannot re-sign (nor take back from the file) still shows it."""
    _events(service_ctx, 3)
    _events(service_ctx, 1, action="device.delete")
    _events(service_ctx, 3)
    audit_chain.checkpoint(_db(service_ctx), "manual")
    row_id, seq = _seq_of(service_ctx, "device.delete")
    _untriggered(service_ctx, ("DELETE FROM audit_events WHERE id = :id", {"id": row_id}),
                 ("DELETE FROM audit_checkpoints", {}))  # fmt: skip
    _relink(service_ctx, key=audit_chain.current_key())
    assert audit_chain.verify(_db(service_ctx)).ok  # the key holder's limit, documented
    report = audit_chain.verify(_db(service_ctx), checkpoints=_file_lines(service_ctx))
    assert not report.ok
    assert any("does not match the chain" in p for p in report.problems), report.problems


def test_truncated_tail_below_a_checkpoint_fails_verify_with_checkpoints(service_ctx):
    _events(service_ctx, 30)
    anchored = audit_chain.checkpoint(_db(service_ctx), "manual")["seq"]
    audit_chain.seal(_db(service_ctx))  # the checkpoint's own event is row anchored + 1
    _untriggered(  # the newest 25 rows, and the database's copy of the checkpoint
        service_ctx,
        ("DELETE FROM audit_events WHERE chain_seq > :keep", {"keep": anchored + 1 - 25}),
        ("DELETE FROM audit_checkpoints", {}),
    )
    assert audit_chain.verify(_db(service_ctx)).ok  # nothing inside the database remembers
    report = audit_chain.verify(_db(service_ctx), checkpoints=_file_lines(service_ctx))
    assert not report.ok
    assert report.head_seq == anchored - 24
    assert report.missing[0]["rows"] == [anchored - 23, anchored]
    assert report.missing[0]["anchored_by"]["seq"] == anchored
    assert report.problems[0].startswith(
        f"rows {anchored - 23}..{anchored} missing since the start of the log: "
    )


def test_swapped_rows_are_detected(service_ctx):
    _events(service_ctx, 6)
    audit_chain.seal(_db(service_ctx))
    with _db(service_ctx).session() as s:
        ids = list(s.scalars(select(AuditEvent.id).order_by(AuditEvent.chain_seq)))
    ids[2], ids[3] = ids[3], ids[2]
    _relink(service_ctx, order=ids)
    report = audit_chain.verify(_db(service_ctx))
    assert not report.ok
    assert f"row id {ids[2]} (chain 3) breaks the chain" in report.problems[0]


def test_row_edited_with_a_mac_under_a_wrong_key_is_detected(service_ctx):
    _events(service_ctx, 4)
    audit_chain.seal(_db(service_ctx))
    with _db(service_ctx).session() as s:
        row = s.scalars(select(AuditEvent).order_by(AuditEvent.chain_seq).limit(1)).one()
        values = {**audit_chain.row_values(row), "outcome": "denied"}
        row_id = row.id
    forged = audit_chain.row_mac(values, ATTACKER_KEY)
    _untriggered(
        service_ctx,
        ("UPDATE audit_events SET outcome = 'denied', mac = :m WHERE id = :id",
         {"m": forged, "id": row_id}),
    )  # fmt: skip
    _relink(service_ctx, from_seq=1)  # its link too, with the attacker's key
    report = audit_chain.verify(_db(service_ctx))
    assert f"row id {row_id} (chain 1) does not match its MAC (edited)" in report.problems


def test_forged_checkpoint_and_prune_are_refused(service_ctx):
    """A made-up prune checkpoint (no checkpoint key) lets the trigger delete, but verify
    rejects its signature and reports the removed prefix."""
    _events(service_ctx, 5)
    audit_chain.seal(_db(service_ctx))
    fake = {"v": 1, "kind": "prune", "seq": 3, "head": "ab" * 32, "at": "2026-01-01T00:00:00Z",
            "key_id": "0" * 16}  # fmt: skip
    _untriggered(
        service_ctx,
        ("INSERT INTO audit_checkpoints (seq, kind, payload, signature) "
         "VALUES (3, 'prune', :p, :s)", {"p": json.dumps(fake), "s": "AAAA"}),
    )  # fmt: skip
    with _db(service_ctx).engine.begin() as conn:  # the trigger now allows this
        conn.execute(text("DELETE FROM audit_events WHERE chain_seq <= 3"))
    report = audit_chain.verify(_db(service_ctx))
    assert any("bad signature" in p for p in report.problems)
    assert "rows 1..3 of the chain are missing (deleted)" in report.problems


def test_database_refuses_to_edit_or_delete_checkpoints_and_unpruned_rows(service_ctx):
    _events(service_ctx, 3)
    audit_chain.checkpoint(_db(service_ctx), "manual")
    db = _db(service_ctx)
    for sql, match in (
        ("DELETE FROM audit_checkpoints", "append-only"),
        ("UPDATE audit_checkpoints SET seq = 0", "append-only"),
        ("DELETE FROM audit_events WHERE chain_seq = 1", "append-only"),
        ("UPDATE audit_events SET chain_version = NULL", "append-only"),
    ):
        with pytest.raises(DBAPIError, match=match):
            with db.engine.begin() as conn:
                conn.execute(text(sql))


# -- legitimate changes ----------------------------------------------------------------------
def test_checkpoints_are_signed_published_and_verified(service_ctx):
    from idp_service.webhooks.tables import WebhookDelivery, WebhookEndpoint

    with _db(service_ctx).session() as s:
        s.add(WebhookEndpoint(url="https://siem.example/hook", secret="whsec_x", active=True))
    _events(service_ctx, 3)
    line = audit_chain.checkpoint(_db(service_ctx), "manual", actor="cli")
    assert line["seq"] >= 3 and line["kind"] == "manual" and len(line["head"]) == 64
    assert _file_lines(service_ctx) == [line]  # appended to the file
    assert oct(_file(service_ctx).stat().st_mode & 0o777) == "0o600"
    with _db(service_ctx).session() as s:
        delivery = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_type == "audit.checkpoint")
        ).one()
        stored = s.scalars(select(AuditCheckpoint)).one()
    assert delivery.payload["data"]["details"] == line  # the webhook receiver's copy
    assert stored.seq == line["seq"] and stored.signature == line["signature"]
    report = audit_chain.verify(_db(service_ctx), checkpoints=[delivery.payload["data"]["details"]])
    assert report.ok, report.problems
    assert report.anchored_seq == line["seq"] and report.checkpoints == 1  # the same one
    assert report.unanchored_rows == 1  # the checkpoint's own audit.checkpoint row
    # The signature covers every field, under this service's key only.
    bad = {**line, "seq": line["seq"] - 1}
    assert any("bad signature" in p for p in
               audit_chain.verify(_db(service_ctx), checkpoints=[bad]).problems)  # fmt: skip
    from nacl.signing import SigningKey

    other = SigningKey.generate().verify_key
    assert not audit_chain.verify(_db(service_ctx), checkpoints=[line], public_key=other).ok


def test_interval_checkpoints_are_signed_only_when_the_chain_grew(service_ctx):
    db = _db(service_ctx)
    _events(service_ctx, 2)
    first = audit_chain.interval_checkpoint(db)
    assert first is not None and first["kind"] == "interval"
    assert audit_chain.interval_checkpoint(db) is None  # only its own audit.checkpoint row
    _events(service_ctx, 1)
    second = audit_chain.interval_checkpoint(db)
    assert second is not None and second["seq"] == first["seq"] + 2
    assert audit_chain.verify(_db(service_ctx), checkpoints=_file_lines(service_ctx)).ok


def test_prune_removes_a_prefix_up_to_a_checkpoint_and_verify_starts_there(service_ctx):
    db = _db(service_ctx)
    _events(service_ctx, 10)
    kept_from = audit_chain.checkpoint(db, "manual")["seq"] + 1
    before = utcnow() + dt.timedelta(microseconds=1)
    _events(service_ctx, 5)
    audit_chain.checkpoint(db, "manual")
    # Nothing to prune before the first checkpoint's row: refused, nothing written.
    with pytest.raises(ValueError, match="no checkpoint anchors"):
        audit_chain.prune(db, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    result = audit_chain.prune(db, before)
    assert result["first_retained"] == kept_from and result["rows"] == kept_from - 1
    with db.session() as s:
        assert s.execute(select(func.min(AuditEvent.chain_seq))).scalar_one() == kept_from
        pruned = s.scalars(select(AuditEvent).where(AuditEvent.action == "audit.prune")).one()
    assert pruned.details["through_seq"] == kept_from - 1
    report = audit_chain.verify(db, checkpoints=_file_lines(service_ctx))
    assert report.ok, report.problems
    assert report.retained_from == kept_from and report.pruned["seq"] == kept_from - 1
    # Deleting past the prune point is still refused by the database, and caught if forced.
    with pytest.raises(DBAPIError, match="append-only"):
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_events WHERE chain_seq = :s"), {"s": kept_from})
    _untriggered(service_ctx, ("DELETE FROM audit_events WHERE chain_seq = :s", {"s": kept_from}))
    bad = audit_chain.verify(db, checkpoints=_file_lines(service_ctx))
    assert f"rows {kept_from}..{kept_from} of the chain are missing (deleted)" in bad.problems


def test_restore_from_an_older_backup_reports_rows_missing_since_a_checkpoint(service_ctx):
    """A database restored to an older point is, to the log, a truncation: verify says
    which checkpoint it still matches and which rows newer ones anchor. A ``restore``
    checkpoint (checkpoint key needed) acknowledges the loss; verify then passes and
    keeps reporting it."""
    db = _db(service_ctx)
    _events(service_ctx, 4)
    backup = audit_chain.checkpoint(db, "manual")  # the backup is taken right after this
    backup_head = backup["seq"] + 1  # the checkpoint's own audit row
    _events(service_ctx, 6)
    newest = audit_chain.checkpoint(db, "manual")
    _untriggered(  # "restore": the database as the backup had it
        service_ctx,
        ("DELETE FROM audit_events WHERE chain_seq > :s OR chain_seq IS NULL", {"s": backup_head}),
        ("DELETE FROM audit_checkpoints WHERE seq > :s", {"s": backup["seq"]}),
    )
    report = audit_chain.verify(db, checkpoints=_file_lines(service_ctx))
    assert not report.ok
    assert report.missing == [
        {
            "rows": [backup_head + 1, newest["seq"]],
            "since_checkpoint": {k: backup[k] for k in ("seq", "at", "head")},
            "anchored_by": {k: newest[k] for k in ("seq", "at", "head")},
        }
    ]
    assert report.problems[0].startswith(
        f"rows {backup_head + 1}..{newest['seq']} missing since checkpoint seq {backup['seq']} "
    )
    restore = audit_chain.checkpoint(db, "restore", actor="cli")
    _events(service_ctx, 3)  # the restored service goes on, reusing the lost seqs
    audit_chain.checkpoint(db, "manual")
    lines = _file_lines(service_ctx)
    # The acknowledgement counts only if the checkpoint file holds it too.
    without = [c for c in lines if c["kind"] != "restore"]
    assert not audit_chain.verify(db, checkpoints=without).ok
    after = audit_chain.verify(db, checkpoints=lines)
    assert after.ok, after.problems
    assert after.restored == [
        {"restore": {"seq": restore["seq"], "at": restore["at"]},
         "lost_rows": [restore["seq"] + 1, newest["seq"]], "lost_checkpoints": 1}
    ]  # fmt: skip


# -- re-sealing a chain of the old, unkeyed scheme -------------------------------------------
def _old_link(previous: str, mac: str) -> str:
    return hashlib.sha256((previous + mac).encode()).hexdigest()


def test_old_chain_is_resealed_under_the_keyed_chain_and_audited(empty_database_url, tmp_path):
    from alembic import command

    from idp_service.platform.db import Database
    from idp_service.platform.migrate import alembic_config, upgrade

    url = empty_database_url
    command.upgrade(alembic_config(url), "0014")
    key = b"k" * 32
    audit_chain.configure(key, data_dir=tmp_path / "data")
    db = Database(url)
    try:
        previous = audit_chain.GENESIS
        with db.engine.begin() as conn:
            for seq in range(1, 6):
                values = audit_chain.with_mac(
                    {
                        "at": utcnow(),
                        "action": "device.approve",
                        "outcome": "ok",
                        "actor": "old",
                        "details": {"n": seq},
                    }  # fmt: skip
                )
                previous = _old_link(previous, values["mac"])
                conn.execute(
                    text("INSERT INTO audit_events (at, action, outcome, actor, details, mac, "
                         "chain_seq, chain_hash) VALUES (:at, :action, :outcome, :actor, "
                         ":details, :mac, :seq, :hash)"),
                    {**values, "details": json.dumps(values["details"]), "seq": seq,
                     "hash": previous},
                )  # fmt: skip
        old_head = previous
        upgrade(url)
        report = audit_chain.verify(db)  # seals first: re-seals, audits, checkpoints
        assert report.ok, report.problems
        with db.session() as s:
            reseal = s.scalars(select(AuditEvent).where(AuditEvent.action == "audit.reseal")).one()
            versions = set(s.scalars(select(AuditEvent.chain_version)))
            kinds = list(s.scalars(select(AuditCheckpoint.kind)))
        assert reseal.outcome == "ok" and reseal.chain_seq == 6
        assert reseal.details["old_head"] == old_head and reseal.details["rows"] == 5
        assert reseal.details["old_chain_problems"] == 0
        assert versions == {2} and kinds == ["reseal"]
        lines, _ = audit_chain.read_checkpoint_file(audit_chain.current_checkpoint_file())
        assert [c["kind"] for c in lines] == ["reseal"]
        assert audit_chain.verify(db, checkpoints=lines).ok
    finally:
        db.dispose()
        audit_chain.configure(key, data_dir=tmp_path / "other")


# -- the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_checkpoint_export_verify_and_prune(service_ctx, tmp_path):
    import subprocess
    import sys

    from tests.procs import base_env

    _events(service_ctx, 4)
    settings = service_ctx.extensions["devicetrust"].settings
    env = base_env(
        DEVICETRUST_DATABASE_URL=settings.database_url,
        DEVICETRUST_DATA_DIR=str(settings.data_dir),
        DEVICETRUST_AUDIT_CHECKPOINT_FILE=str(tmp_path / "anchors.jsonl"),
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "idp_service", "audit", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    made = cli("checkpoint")
    assert made.returncode == 0, made.stderr
    line = json.loads(made.stdout)
    assert json.loads((tmp_path / "anchors.jsonl").read_text()) == line
    assert json.loads(cli("checkpoint", "--export").stdout) == line
    cli("checkpoint")
    assert len(cli("checkpoint", "--export", "--all").stdout.splitlines()) == 2
    public = cli("checkpoint", "--public-key").stdout.strip()
    assert public == audit_chain.public_key_hex() and len(public) == 64
    ok = cli("verify", "--checkpoints", str(tmp_path / "anchors.jsonl"), "--public-key", public,
             "--json")  # fmt: skip
    data = json.loads(ok.stdout)
    assert ok.returncode == 0 and data["ok"] and data["anchored_seq"] > line["seq"]
    text_out = cli("verify", "--checkpoints", str(tmp_path / "anchors.jsonl")).stdout
    assert "anchored by the checkpoint file up to seq" in text_out
    bad_key = cli("verify", "--public-key", "zz")
    assert bad_key.returncode == 2 and "--public-key" in bad_key.stderr
    tomorrow = (utcnow() + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    pruned = cli("prune", "--before", tomorrow, "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["first_retained"] > 1
    after = cli("verify", "--checkpoints", str(tmp_path / "anchors.jsonl"))
    assert after.returncode == 0 and "retained log starts at seq" in after.stdout
    _untriggered(service_ctx, ("DELETE FROM audit_events WHERE chain_seq = "
                               "(SELECT MAX(chain_seq) - 1 FROM audit_events)", {}))  # fmt: skip
    bad = cli("verify", "--checkpoints", str(tmp_path / "anchors.jsonl"))
    assert bad.returncode == 1 and "TAMPERED" in bad.stdout


def test_the_running_service_publishes_checkpoints_to_its_file_and_webhooks(tmp_path, database_url):
    """The real service: its sealer signs checkpoints at intervals, appends them to the file
    and sends them as ``audit.checkpoint`` events; the receiver's copies verify the log."""
    import time

    import httpx

    from tests.procs import start_service
    from tests.webhook_receiver import Receiver

    anchors = tmp_path / "anchors.jsonl"
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={
            "DEVICETRUST_AUDIT_CHECKPOINT_INTERVAL": "1",
            "DEVICETRUST_AUDIT_CHECKPOINT_FILE": str(anchors),
            "DEVICETRUST_WEBHOOK_POLL": "0.1",
            "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )
    try:
        with Receiver() as receiver:
            hook = receiver.add("/audit")
            token = svc.cli_json("api-token", "create", "hooks", "--scope", "write")["token"]
            created = httpx.post(
                f"{svc.url}/api/v1/webhooks",
                json={"url": receiver.url("/audit"), "event_types": ["audit.checkpoint"]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert created.status_code == 201, created.text
            hook.secret = created.json()["secret"]
            deadline = time.monotonic() + 30
            while True:
                with receiver.lock:
                    received = list(receiver.hooks["/audit"].received)
                if received:
                    break
                assert time.monotonic() < deadline, "no audit.checkpoint event"
                time.sleep(0.1)
        assert all(r.verified == r.headers["webhook-id"] for r in received)
        from_webhook = [r.payload["data"]["details"] for r in received]
        assert {r.payload["type"] for r in received} == {"audit.checkpoint"}
        assert all(line["kind"] == "interval" for line in from_webhook)
        in_file = [json.loads(raw) for raw in anchors.read_text().splitlines()]
        assert all(line in in_file for line in from_webhook)
        copy = tmp_path / "from-webhook.jsonl"
        copy.write_text("".join(json.dumps(line) + "\n" for line in from_webhook))
        public = svc.cli("audit", "checkpoint", "--public-key").stdout.strip()
        verify = svc.cli("audit", "verify", "--checkpoints", str(copy), "--public-key", public,
                         "--json", check=False)  # fmt: skip
        report = json.loads(verify.stdout)
        assert verify.returncode == 0 and report["ok"], report["problems"]
        assert report["anchored_seq"] == max(line["seq"] for line in from_webhook)
    finally:
        svc.stop()
