"""Benchmark: the service's full verify path against the crypto ceiling (issue 2).

Prints, in one run:
  * the crypto ceiling on this machine: one NaCl box open (with key agreement)
    plus two Ed25519 verifies per second, with PyNaCl alone, on one core;
  * the service's full verify path per second, in-process on one core, through
    the real database code (``idp_service.authenticate.verify``: HKDF key
    derivation, box open, both signature checks, registry read, atomic challenge
    consumption, device and transaction updates, audit event, commit), on SQLite
    and on PostgreSQL;
  * the ratio of each to the ceiling (target: at least 50%).

Usage: python bench/verify.py [--n 3000] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
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


def service_path(url: str, n: int) -> tuple[float, float]:
    """(full verify path, protocol checks alone) per second, through the real service code."""
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
    envelopes = []
    platform = {"hardware_uuid": "bench-hw", "serial": "bench-sn", "os": "linux"}
    with db.session() as s:
        for _ in range(n):
            txn = transactions.create(s, ttl_seconds=600)
            token, challenge = challenges.issue(
                service, "authenticate", transactions.binding_for(txn)
            )
            body = ResponseBody(token, keys.public_json(), platform, "bench", time.time())
            envelopes.append(seal_response(body, challenge, keys))
    # A live deployment's tables have planner statistics (autovacuum); give the fresh
    # scratch database the same, or PostgreSQL plans the first statements blind.
    from sqlalchemy import text

    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))

    from trust_protocol import open_response

    start = time.perf_counter()
    for env in envelopes:
        open_response(
            env,
            verify_key=service.keys.verify_key,
            box_key_for=service.keys.challenge_box_secret,
            now=time.time(),
            purposes=("authenticate",),
        )
    protocol_only = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for env in envelopes:
        verify(service, env, via="callback")
    elapsed = time.perf_counter() - start
    db.dispose()
    return n / elapsed, protocol_only


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="responses per measurement")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create a scratch database on",
    )
    args = parser.parse_args()

    ceiling = crypto_ceiling(args.n)
    print(f"crypto ceiling (box open + 2 Ed25519 verifies, PyNaCl, 1 core): {ceiling:,.0f}/s")

    with tempfile.TemporaryDirectory() as tmp:
        sqlite, protocol = service_path(f"sqlite:///{tmp}/bench.db", args.n)
    print(f"protocol checks alone (no DB):   {protocol:,.0f}/s  ratio {protocol / ceiling:.0%}")
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
        pg, _ = service_path(base.set(database=name).render_as_string(hide_password=False), args.n)
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    print(f"service verify path, PostgreSQL: {pg:,.0f}/s  ratio {pg / ceiling:.0%} of ceiling")
    print("target: ratio >= 50%")


if __name__ == "__main__":
    main()
