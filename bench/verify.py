"""Benchmark: the service's full verify path against the crypto ceiling (issue 2).

Prints, in one run, everything on one core (the bench pins itself to one CPU):
  * the crypto ceiling on this machine: one NaCl box open (with key agreement)
    plus two Ed25519 verifies per second, with PyNaCl alone;
  * the protocol checks alone (``open_response``: HKDF key derivation, box open,
    both signature checks, parsing), no database;
  * the service's full verify path per second, in-process, through the real
    database code (``idp_service.signin.authenticate.verify``: the protocol checks, then
    the one guarded write that consumes the challenge, checks the device is
    trusted with this key and its owner active, updates the device and the login
    transaction and appends the audit event, durably committed), on SQLite and on
    PostgreSQL. On PostgreSQL twice: one answer at a time, where each answer
    waits for its own durable commit (the figure is then bound by the disk's
    flush latency, printed alongside), and N threads sharing the one core, as the
    service's threads do, so that one answer's commit overlaps another's checks;
  * the ratio of each to the ceiling (target: at least 50%).

The machine is shared, so the measurements are interleaved: slices of each run
in turn (ceiling, protocol, SQLite, PostgreSQL, PostgreSQL threaded), and each
rate is the total over its slices. Load from elsewhere then falls on every
figure alike, and the ratios stay meaningful when the absolute rates do not.

Usage: python bench/verify.py [--n 3000] [--slice 100] [--threads 4]
       [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacl.public import Box, PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402


def ceiling_run(n: int) -> Callable[[int, int], None]:
    """Box opens (fresh key agreement each) plus two Ed25519 verifies: items [i, j)."""
    server = PrivateKey.generate()
    signer = SigningKey.generate()
    items = []
    for _ in range(n):
        eph = PrivateKey.generate()
        sealed = Box(eph, server.public_key).encrypt(os.urandom(900))
        items.append(
            (eph.public_key, sealed, signer.sign(os.urandom(400)), signer.sign(os.urandom(900)))
        )
    vk = signer.verify_key

    def run(i: int, j: int) -> None:
        for epk, sealed, s1, s2 in items[i:j]:
            Box(server, epk).decrypt(sealed)
            vk.verify(s1)
            vk.verify(s2)

    return run


class ServicePath:
    """A service context on one database, with a trusted device and sealed answers."""

    def __init__(self, url: str) -> None:
        from idp_service.directory import users
        from idp_service.platform.config import Settings
        from idp_service.platform.db import Database
        from idp_service.platform.keys import load_server_keys
        from idp_service.platform.migrate import upgrade
        from idp_service.platform.models import Device, utcnow
        from idp_service.saml.keys import KeyRing
        from idp_service.services import Services
        from idp_service.signin.reads import DeviceOwners
        from idp_service.webhooks import outbox
        from trust_protocol import DeviceKeys

        upgrade(url)
        outbox.subscribe_to_audit()  # as the service process does (app.py)
        settings = Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": url,
                "DEVICETRUST_PUBLIC_URL": "https://idp.example.com",
                "DEVICETRUST_CHALLENGE_TTL": "120",  # a loaded machine runs slowly
            }
        )
        self.db = Database(url)
        self.service = Services(
            settings=settings,
            db=self.db,
            keys=load_server_keys(self.db),
            saml_keys=KeyRing(self.db),
            device_owners=DeviceOwners(self.db.engine),
        )
        self.keys = DeviceKeys.generate(str(uuid.uuid4()))
        with self.db.session() as s:
            user = users.create(s, f"bench-{uuid.uuid4().hex[:8]}@example.com")
            now = utcnow()
            s.add(
                Device(
                    id=self.keys.device_id, user_id=user.id, state="trusted",
                    sign_key=self.keys.sign_public, box_key=self.keys.box_public,
                    first_seen=now, last_seen=now,
                )
            )  # fmt: skip
        self.pool: ThreadPoolExecutor | None = None

    def envelopes(self, n: int) -> list[bytes]:
        """``n`` answers, each to its own challenge bound to its own login transaction."""
        from sqlalchemy import text

        from idp_service.devices import challenges
        from idp_service.signin import transactions
        from trust_protocol import ResponseBody, seal_response

        platform = {"hardware_uuid": "bench-hw", "serial": "bench-sn", "os": "linux"}
        out = []
        with self.db.session() as s:
            for _ in range(n):
                txn = transactions.create(s, ttl_seconds=600)
                token, challenge = challenges.issue(
                    self.service, "authenticate", transactions.binding_for(txn)
                )
                body = ResponseBody(token, self.keys.public_json(), platform, "bench", time.time())
                out.append(seal_response(body, challenge, self.keys))
        # A live deployment's tables have planner statistics (autovacuum); give the fresh
        # scratch database the same, or PostgreSQL plans the first statements blind.
        with self.db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        return out

    def protocol(self, batch: list[bytes]) -> None:
        """The protocol checks alone."""
        from trust_protocol import open_response

        keys = self.service.keys
        for env in batch:
            open_response(
                env,
                verify_key=keys.verify_key,
                box_key_for=keys.challenge_box_secret,
                now=time.time(),
                purposes=("authenticate",),
            )

    def verify(self, batch: list[bytes], threads: int = 1) -> None:
        """The full verify path for each answer, on ``threads`` threads."""
        from idp_service.signin.authenticate import verify

        def run(chunk: list[bytes]) -> None:
            for env in chunk:
                verify(self.service, env, via="callback")

        if threads == 1:
            run(batch)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(threads)
        list(self.pool.map(run, [batch[i::threads] for i in range(threads)]))

    def commit_latency_us(self, n: int = 300) -> float:
        """Median microseconds of one durable single-row INSERT in autocommit (WAL flush)."""
        from idp_service.platform.driver import driver

        times = []
        with driver(self.db.engine) as (conn, _):
            conn.execute("CREATE TABLE bench_commit_probe (id serial PRIMARY KEY, v text)")
            for _ in range(n):
                start = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_probe (v) VALUES ('x')")
                times.append(time.perf_counter() - start)
            conn.execute("DROP TABLE bench_commit_probe")
        return 1e6 * statistics.median(times)

    def close(self) -> None:
        """Stop the threads and close the connections."""
        if self.pool is not None:
            self.pool.shutdown()
        self.db.dispose()


def _scratch_pg(base_url: str):  # noqa: ANN202
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"devicetrust_bench_{uuid.uuid4().hex[:8]}"
    admin = dict(host=base.host, port=base.port or 5432, user=base.username, dbname=base.database)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    return base.set(database=name).render_as_string(hide_password=False), drop


def measure(n: int, size: int, threads: int, pg_url: str) -> dict[str, float]:
    """Rates per second of every figure, measured in interleaved slices of ``size``."""
    ceiling = ceiling_run(n)
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = _scratch_pg(pg_url)
        lite = ServicePath(f"sqlite:///{tmp}/bench.db")
        pg = ServicePath(url)
        try:
            lite_batch, lite_many = lite.envelopes(n), lite.envelopes(n)
            pg_one, pg_many = pg.envelopes(n), pg.envelopes(n)
            runs: dict[str, Callable[[int, int], None]] = {
                "ceiling": ceiling,
                "protocol": lambda i, j: lite.protocol(lite_batch[i:j]),
                "sqlite": lambda i, j: lite.verify(lite_batch[i:j]),
                f"sqlite_{threads}": lambda i, j: lite.verify(lite_many[i:j], threads),
                "pg_1": lambda i, j: pg.verify(pg_one[i:j]),
                f"pg_{threads}": lambda i, j: pg.verify(pg_many[i:j], threads),
            }
            spent = dict.fromkeys(runs, 0.0)
            for i in range(0, n, size):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run(i, min(i + size, n))
                    spent[name] += time.perf_counter() - start
            rates = {name: n / seconds for name, seconds in spent.items()}
            rates["commit_us"] = pg.commit_latency_us()
        finally:
            lite.close()
            pg.close()
            drop()
    return rates


def io_pressure() -> str:
    """How much of the last minute tasks stalled on I/O (Linux PSI), as a note."""
    try:
        line = Path("/proc/pressure/io").read_text().split("\n")[0]
    except OSError:
        return "I/O pressure unknown"
    fields = dict(f.split("=") for f in line.split()[1:])
    return f"I/O stalls {fields['avg60']}% of the last minute"


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="answers per figure")
    parser.add_argument("--slice", type=int, default=100, help="answers per interleaved slice")
    parser.add_argument(
        "--threads", type=int, default=4, help="threads for the concurrent PostgreSQL run"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create a scratch database on",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.n, args.slice, args.threads = 20, 10, 2

    # Everything runs on one core, the ceiling too: a single-threaded loop uses one core,
    # and the threaded run may not borrow the second.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    load_before = os.getloadavg()[0]
    r = measure(args.n, args.slice, args.threads, args.pg_url)
    ceiling = r["ceiling"]

    def line(label: str, rate: float, extra: str = "") -> None:
        print(f"{label:<48} {rate:7,.0f}/s  ratio {rate / ceiling:4.0%}{extra}")

    print(
        f"one core; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after;"
        f" {io_pressure()}"
    )
    print(f"{'crypto ceiling (box open + 2 Ed25519 verifies, PyNaCl)':<48} {ceiling:7,.0f}/s")
    line("protocol checks alone (no database)", r["protocol"])
    line("service verify path, SQLite, 1 answer at a time", r["sqlite"])
    line(f"service verify path, SQLite, {args.threads} threads", r[f"sqlite_{args.threads}"])
    line(
        "service verify path, PostgreSQL, 1 answer at a time",
        r["pg_1"],
        f"  (one durable commit here: {r['commit_us']:,.0f} us)",
    )
    line(f"service verify path, PostgreSQL, {args.threads} threads", r[f"pg_{args.threads}"])
    print("target: ratio >= 50%")


if __name__ == "__main__":
    main()
