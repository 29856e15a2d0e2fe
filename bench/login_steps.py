"""Where a login's time goes: CPU and wall time per step, in-process, one thread.

Drives the real app through Flask's test client (no HTTP server, no load
generator) for N full logins: ``GET /saml/sso`` -> ``POST /login/<txn>/challenge``
-> the agent's work -> ``POST /login/<txn>/response`` -> ``GET /login/<txn>/continue``,
and prints the mean process CPU and wall time of each step, plus how many SQL
statements and explicit commits each step sent (on PostgreSQL every statement,
through SQLAlchemy or on the driver connection; on SQLite only SQLAlchemy's).
``--profile FILE`` writes a cProfile (CPU time) of the service steps.

Usage: python bench/login_steps.py [--n 500] [--db postgres|sqlite] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
import zlib
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SP_ENTITY = "https://bench-sp.example.com/metadata"
SP_ACS = "https://bench-sp.example.com/acs"
STEPS = ("sso", "challenge", "agent", "response", "continue")


def _query(sso_url: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_{uuid.uuid4().hex}" Version="2.0" IssueInstant="{now}" Destination="{sso_url}" '
        f'AssertionConsumerServiceURL="{SP_ACS}" '
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{SP_ENTITY}</saml:Issuer></samlp:AuthnRequest>"
    ).encode()
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return urlencode({"SAMLRequest": base64.b64encode(c.compress(xml) + c.flush()).decode()})


def _count_statements(engine, counts: dict[str, int]) -> None:  # noqa: ANN001
    """Count every statement the service sends, through SQLAlchemy or on the driver
    connection directly, and every explicit commit (an autocommitted statement is its
    own transaction and is not counted as a commit)."""
    if engine.dialect.name == "postgresql":
        import psycopg

        execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit

        def counted_execute(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counts["sql"] += 1
            return execute(self, *args, **kwargs)

        def counted_commit(self):  # noqa: ANN001, ANN202
            counts["commit"] += self.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            return commit(self)

        psycopg.Cursor.execute = counted_execute
        psycopg.Connection.commit = counted_commit
        return
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _sql(*_a: object) -> None:
        counts["sql"] += 1

    @event.listens_for(engine, "commit")
    def _commit(*_a: object) -> None:
        counts["commit"] += 1


def run(url: str, n: int, profile: str | None, profile_steps: tuple[str, ...] = STEPS) -> None:
    """Set up a service on ``url`` and time ``n`` logins step by step."""
    from idp_service.app import create_app
    from idp_service.devices import enroll
    from idp_service.directory import users
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade
    from idp_service.saml import api
    from tests.saml_support import FlaskClient, SimDevice, sp_metadata

    upgrade(url)
    tmp = tempfile.mkdtemp()
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": url,
                "DEVICETRUST_DATA_DIR": tmp,
                "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                "DEVICETRUST_RATELIMIT_ENABLED": "false",  # one address, bench rates
            }
        )
    )
    db = app.extensions["devicetrust"].db
    api.create_sp(db, {"metadata_xml": sp_metadata(SP_ENTITY, [SP_ACS]).decode()})
    with db.session() as s:
        user = users.create(s, f"steps-{uuid.uuid4().hex[:6]}@example.com")
        code = enroll.create_code(s, user, ttl_seconds=600)[0]
    client = FlaskClient(app)
    device = SimDevice()
    device.register(client, code)

    counts = {"sql": 0, "commit": 0}
    _count_statements(db.engine, counts)

    cpu: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    sql: dict[str, int] = defaultdict(int)
    commits: dict[str, int] = defaultdict(int)
    prof = cProfile.Profile(time.process_time) if profile else None
    sso_url = "http://127.0.0.1:8000/saml/sso"

    def step(name: str, fn):  # noqa: ANN001, ANN202
        counts["sql"] = counts["commit"] = 0
        c0, w0 = time.process_time(), time.perf_counter()
        profiled = prof is not None and name in profile_steps
        if profiled:
            prof.enable()
        out = fn()
        if profiled:
            prof.disable()
        cpu[name] += time.process_time() - c0
        wall[name] += time.perf_counter() - w0
        sql[name] += counts["sql"]
        commits[name] += counts["commit"]
        return out

    def one() -> None:
        r = step("sso", lambda: client.get("/saml/sso?" + _query(sso_url)))
        assert r.status_code == 303, r.text
        txn = r.headers["Location"].rsplit("/", 1)[-1]
        ch = step("challenge", lambda: client.post(f"/login/{txn}/challenge", json={}))
        assert ch.status_code == 200, ch.text
        envelope = step("agent", lambda: device.answer(ch.json()["challenge"]))
        st = step("response", lambda: client.post(f"/login/{txn}/response", content=envelope))
        assert st.status_code == 200 and st.json()["status"] == "verified", st.text
        page = step("continue", lambda: client.get(f"/login/{txn}/continue"))
        assert page.status_code == 200 and 'name="SAMLResponse"' in page.text, page.text[:300]

    for _ in range(min(50, n)):
        one()
    for d in (cpu, wall, sql, commits):
        d.clear()
    if prof:
        prof = cProfile.Profile(time.process_time)
    for _ in range(n):
        one()
    print(f"{'step':<10} {'CPU ms':>7} {'wall ms':>8} {'SQL':>5} {'commits':>8}")
    for name in STEPS:
        print(
            f"{name:<10} {1000 * cpu[name] / n:7.2f} {1000 * wall[name] / n:8.2f}"
            f" {sql[name] / n:5.1f} {commits[name] / n:8.1f}"
        )
    total_cpu = sum(cpu[s] for s in STEPS if s != "agent")
    total_wall = sum(wall[s] for s in STEPS if s != "agent")
    print(f"{'service':<10} {1000 * total_cpu / n:7.2f} {1000 * total_wall / n:8.2f}")
    if prof:
        prof.dump_stats(profile)
    db.dispose()


def main() -> None:
    """Run on a scratch database and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the steps here")
    parser.add_argument(
        "--steps", default="sso,challenge,response,continue", help="steps to profile"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.n = 3
    if args.db == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/steps.db", args.n, args.profile, tuple(args.steps.split(",")))
        return
    from bench.login import _scratch_pg

    url, drop = _scratch_pg(args.pg_url)
    try:
        run(url, args.n, args.profile, tuple(args.steps.split(",")))
    finally:
        drop()


if __name__ == "__main__":
    main()
