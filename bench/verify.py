"""Benchmark: the service's full verify path against the crypto ceiling (issue 2).

Prints, in one run, everything on one core (the bench pins itself to one CPU):
  * the crypto ceiling on this machine: one NaCl box open (with key agreement)
    plus two Ed25519 verifies per second, with PyNaCl alone;
  * the protocol checks alone (``open_response``: HKDF key derivation, box open,
    both signature checks, parsing), no database;
  * the service's full verify path per second, in-process, through the real
    database code (``idp_service.authenticate.verify``: the protocol checks, then
    the one guarded write that consumes the challenge, checks the device is
    trusted with this key and its owner active, updates the device and the login
    transaction and appends the audit event, durably committed), on SQLite and on
    PostgreSQL. On PostgreSQL twice: one answer at a time, where each answer
    waits for its own durable commit (the figure is then bound by the disk's
    flush latency, printed alongside), and N threads sharing the one core, as the
    service's threads do, so that one answer's commit overlaps another's checks;
  * the ratio of each to the ceiling (target: at least 50%).

Usage: python bench/verify.py [--n 3000] [--threads 4]
       [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacl.public import Box, PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402


def crypto_ceiling(n: int) -> float:
    """Box opens (fresh key agreement each) plus two Ed25519 verifies, per second."""
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
    start = time.perf_counter()
    for epk, sealed, s1, s2 in items:
        Box(server, epk).decrypt(sealed)
        vk.verify(s1)
        vk.verify(s2)
    return n / (time.perf_counter() - start)


def service_path(url: str, n: int, threads: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Full verify path per second through the real service code, for each thread count,
    and the protocol checks alone (``"protocol"``); on PostgreSQL also the latency of one
    durable commit (``"commit_us"``)."""
    from idp_service import challenges, enroll, transactions, users
    from idp_service.authenticate import verify
    from idp_service.config import Settings
    from idp_service.context import ServiceContext
    from idp_service.keys import load_server_keys
    from idp_service.storage.db import Database
    from idp_service.storage.migrate import upgrade
    from idp_service.storage.models import Device, utcnow
    from trust_protocol import DeviceKeys, ResponseBody, seal_response

    upgrade(url)
    settings = Settings.from_env(
        {"DEVICETRUST_DATABASE_URL": url, "DEVICETRUST_PUBLIC_URL": "https://idp.example.com"}
    )
    db = Database(url)
    service = ServiceContext(settings=settings, db=db, keys=load_server_keys(db))
    keys = DeviceKeys.generate(str(uuid.uuid4()))
    with db.session() as s:
        user = users.create(s, f"bench-{uuid.uuid4().hex[:8]}@example.com")
        enroll.create_code(s, user, ttl_seconds=60)
        now = utcnow()
        s.add(
            Device(
                id=keys.device_id, user_id=user.id, state="trusted", sign_key=keys.sign_public,
                box_key=keys.box_public, first_seen=now, last_seen=now,
            )
        )  # fmt: skip
    platform = {"hardware_uuid": "bench-hw", "serial": "bench-sn", "os": "linux"}

    def envelopes() -> list[bytes]:
        out = []
        with db.session() as s:
            for _ in range(n):
                txn = transactions.create(s, ttl_seconds=600)
                token, challenge = challenges.issue(
                    service, "authenticate", transactions.binding_for(txn)
                )
                body = ResponseBody(token, keys.public_json(), platform, "bench", time.time())
                out.append(seal_response(body, challenge, keys))
        # A live deployment's tables have planner statistics (autovacuum); give the fresh
        # scratch database the same, or PostgreSQL plans the first statements blind.
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        return out

    from sqlalchemy import text

    from trust_protocol import open_response

    results: dict[str, float] = {}
    batch = envelopes()
    start = time.perf_counter()
    for env in batch:
        open_response(
            env,
            verify_key=service.keys.verify_key,
            box_key_for=service.keys.challenge_box_secret,
            now=time.time(),
            purposes=("authenticate",),
        )
    results["protocol"] = n / (time.perf_counter() - start)
    for count in threads:
        batch = batch or envelopes()
        chunks = [batch[i::count] for i in range(count)]

        def run(chunk: list[bytes]) -> None:
            for env in chunk:
                verify(service, env, via="callback")

        start = time.perf_counter()
        if count == 1:
            run(batch)
        else:
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(run, chunks))
        results[f"threads_{count}"] = n / (time.perf_counter() - start)
        batch = []
    if db.is_postgres:
        results["commit_us"] = _commit_latency(db)
    db.dispose()
    return results


def _commit_latency(db, n: int = 500) -> float:  # noqa: ANN001
    """Median microseconds of one durable single-row INSERT in autocommit (WAL flush)."""
    import statistics

    from idp_service.storage.driver import driver

    times = []
    with driver(db.engine) as (conn, _):
        conn.execute("CREATE TABLE bench_commit_probe (id serial PRIMARY KEY, v text)")
        for _ in range(n):
            start = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_probe (v) VALUES ('x')")
            times.append(time.perf_counter() - start)
        conn.execute("DROP TABLE bench_commit_probe")
    return 1e6 * statistics.median(times)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="responses per measurement")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create a scratch database on",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads for the concurrent PostgreSQL run"
    )
    args = parser.parse_args()

    # Everything runs on one core, the ceiling too: a single-threaded loop uses one core,
    # and the threaded run below may not borrow the second.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"one core; load average {os.getloadavg()[0]:.1f}")
    ceiling = crypto_ceiling(args.n)
    print(f"crypto ceiling (box open + 2 Ed25519 verifies, PyNaCl, 1 core): {ceiling:,.0f}/s")

    with tempfile.TemporaryDirectory() as tmp:
        lite = service_path(f"sqlite:///{tmp}/bench.db", args.n)
    protocol = lite["protocol"]
    print(f"protocol checks alone (no DB):   {protocol:,.0f}/s  ratio {protocol / ceiling:.0%}")
    sqlite = lite["threads_1"]
    print(
        f"service verify path, SQLite:     {sqlite:,.0f}/s  ratio {sqlite / ceiling:.0%} of ceiling"
    )

    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(args.pg_url)
    name = f"devicetrust_bench_{uuid.uuid4().hex[:8]}"
    admin = dict(host=base.host, port=base.port or 5432, user=base.username, dbname=base.database)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        pg = service_path(
            base.set(database=name).render_as_string(hide_password=False),
            args.n,
            threads=(1, args.threads),
        )
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    one = pg["threads_1"]
    print(
        f"service verify path, PostgreSQL, 1 thread: {one:,.0f}/s  ratio {one / ceiling:.0%}"
        f"  (each answer waits for its own durable commit; one commit here: "
        f"{pg['commit_us']:,.0f} us)"
    )
    many = pg[f"threads_{args.threads}"]
    print(
        f"service verify path, PostgreSQL, {args.threads} threads on the same core: "
        f"{many:,.0f}/s  ratio {many / ceiling:.0%}"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("target: ratio >= 50%")


if __name__ == "__main__":
    main()
