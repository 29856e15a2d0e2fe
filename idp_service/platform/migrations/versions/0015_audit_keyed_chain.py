"""audit keyed chain: chain version, signed checkpoints, prune-aware append-only triggers

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 22:00:00

``audit_events.chain_version`` says which scheme a row's link was computed
under (2: the keyed chain of ``idp_service/platform/audit_chain.py``; NULL: the unkeyed
chain of 0007, re-sealed by the service on its next seal, with an
``audit.reseal`` event). ``audit_checkpoints`` keeps the signed checkpoints.

The append-only triggers now also allow exactly two more things: re-sealing an
old row under the keyed chain (content and position unchanged), and deleting
rows at or below a ``prune`` checkpoint (retention pruning,
``devicetrust audit prune``). The checkpoints table refuses UPDATE and DELETE.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CONTENT = ("id", "at", "action", "outcome", "code", "actor", "user_id", "device_id",
           "remote_addr", "details", "mac")  # fmt: skip
PRUNED = "(SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints WHERE kind = 'prune')"

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.chain_seq IS NOT NULL AND OLD.chain_seq <= {PRUNED} THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    IF (NEW.id, NEW.at, NEW.action, NEW.outcome, NEW.code, NEW.actor, NEW.user_id,
        NEW.device_id, NEW.remote_addr, NEW.details::text, NEW.mac)
       IS DISTINCT FROM
       (OLD.id, OLD.at, OLD.action, OLD.outcome, OLD.code, OLD.actor, OLD.user_id,
        OLD.device_id, OLD.remote_addr, OLD.details::text, OLD.mac)
    THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    IF OLD.chain_seq IS NULL THEN
        RETURN NEW;
    END IF;
    IF COALESCE(OLD.chain_version, 1) < 2 AND NEW.chain_version = 2
       AND NEW.chain_seq = OLD.chain_seq THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
"""

PG_FUNCTION_0007 = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    IF OLD.chain_seq IS NOT NULL
       OR (NEW.id, NEW.at, NEW.action, NEW.outcome, NEW.code, NEW.actor, NEW.user_id,
           NEW.device_id, NEW.remote_addr, NEW.details::text, NEW.mac)
          IS DISTINCT FROM
          (OLD.id, OLD.at, OLD.action, OLD.outcome, OLD.code, OLD.actor, OLD.user_id,
           OLD.device_id, OLD.remote_addr, OLD.details::text, OLD.mac)
    THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    RETURN NEW;
END $$;
"""

PG_CHECKPOINTS = """
CREATE OR REPLACE FUNCTION audit_checkpoints_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only';
END $$;
"""


def _sqlite_triggers(version: int) -> None:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in CONTENT)
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    op.execute("DROP TRIGGER IF EXISTS audit_events_seal_only")
    if version == 15:
        delete_when = f"WHEN OLD.chain_seq IS NULL OR OLD.chain_seq > {PRUNED} "
        update_when = (
            f"WHEN {changed} OR (OLD.chain_seq IS NOT NULL AND NOT ("
            "COALESCE(OLD.chain_version, 1) < 2 AND NEW.chain_version IS 2 "
            "AND NEW.chain_seq IS OLD.chain_seq)) "
        )
    else:
        delete_when = ""
        update_when = f"WHEN OLD.chain_seq IS NOT NULL OR {changed} "
    op.execute(
        f"CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events {delete_when}"
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    )
    op.execute(
        f"CREATE TRIGGER audit_events_seal_only BEFORE UPDATE ON audit_events {update_when}"
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    )


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("chain_version", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_CHECKPOINTS)
        op.execute(
            "CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE "
            "ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only()"
        )
    else:
        _sqlite_triggers(15)
        op.execute(
            "CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON audit_checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints")
        op.execute("DROP FUNCTION IF EXISTS audit_checkpoints_append_only()")
        op.execute(PG_FUNCTION_0007)
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_append_only")
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_events_seal_only")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain_version")
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_triggers(7)
    op.drop_index("ix_audit_checkpoints_seq", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
