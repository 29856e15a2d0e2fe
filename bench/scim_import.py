"""SCIM import benchmark: our SQL-backed endpoint against scim2-server's in-memory peer.

Imports N users by SCIM POST over HTTP, then looks each one up with a
``userName eq`` filter, and prints users/s for both phases, for devicetrust
(the real service process under gunicorn, on PostgreSQL by default, with bearer
auth and one audit event per request) and for scim2-server's ``InMemoryStorage``
application served by the same gunicorn configuration. The ratio is ours/peer.

    python bench/scim_import.py                 # 10,000 users, fresh PostgreSQL database
    python bench/scim_import.py --users 2000 --database-url sqlite:////tmp/b.db
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.procs import base_env, free_port, start_service, wait_http  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def serve_peer(port: int, threads: int) -> None:
    """Serve scim2-server's in-memory application with our provider, as we serve ours."""
    from gunicorn.app.base import BaseApplication
    from scim2_server.applications.wsgi import WSGIApplication
    from scim2_server.memory import InMemoryStorage

    from scim.provider import build_provider
    from scim.service import DevicetrustScimService

    provider = build_provider()
    app = WSGIApplication(InMemoryStorage(), provider, DevicetrustScimService(provider))

    class Peer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", 1)  # in-memory: one process holds the data
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", None)

        def load(self):
            return app

    Peer().run()


def user(i: int, run: str) -> dict:
    name = f"user{i:05}.{run}@example.com"
    return {
        "schemas": [USER],
        "userName": name,
        "externalId": f"ext-{run}-{i}",
        "name": {"givenName": f"Given{i}", "familyName": "Bench"},
        "displayName": f"Given{i} Bench",
        "emails": [{"value": name, "type": "work", "primary": True}],
        "active": True,
    }


class Target:
    """One endpoint under test, with its client threads and its timings."""

    def __init__(self, base_url: str, token: str | None, concurrency: int) -> None:
        headers = {"Content-Type": "application/scim+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.clients = [
            httpx.Client(base_url=base_url, headers=headers, timeout=60) for _ in range(concurrency)
        ]
        self.run = uuid.uuid4().hex[:6]
        self.seconds = {"import": 0.0, "lookup": 0.0}

    def _create(self, k: int, indexes: list[int]) -> None:
        for i in indexes[k :: len(self.clients)]:
            r = self.clients[k].post("/Users", json=user(i, self.run))
            if r.status_code != 201:
                raise RuntimeError(f"POST {i}: {r.status_code} {r.text[:200]}")

    def _lookup(self, k: int, indexes: list[int]) -> None:
        for i in indexes[k :: len(self.clients)]:
            name = user(i, self.run)["userName"]
            r = self.clients[k].get("/Users", params={"filter": f'userName eq "{name}"'})
            if r.status_code != 200 or r.json()["totalResults"] != 1:
                raise RuntimeError(f"lookup {i}: {r.status_code} {r.text[:200]}")

    def phase(self, name: str, indexes: list[int]) -> None:
        """Run one slice of a phase on every client thread, and add its time."""
        work = self._create if name == "import" else self._lookup
        started = time.perf_counter()
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(lambda k: work(k, indexes), range(len(self.clients))))
        self.seconds[name] += time.perf_counter() - started


def compare(ours: Target, peer: Target, n: int, rounds: int) -> None:
    """Alternate slices between the two endpoints, so load from elsewhere on the
    machine falls on both alike."""
    slices = [list(range(n))[r::rounds] for r in range(rounds)]
    for name in ("import", "lookup"):
        for indexes in slices:
            ours.phase(name, indexes)
            peer.phase(name, indexes)


def fresh_postgres() -> tuple[str, callable]:
    from pytest_postgresql.janitor import DatabaseJanitor

    name = f"devicetrust_bench_{uuid.uuid4().hex[:8]}"
    janitor = DatabaseJanitor(user="postgres", host="127.0.0.1", port=5432, dbname=name)
    janitor.init()
    return f"postgresql://postgres@127.0.0.1:5432/{name}", janitor.drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers for ours")
    parser.add_argument("--rounds", type=int, default=10, help="slices alternated per phase")
    parser.add_argument("--database-url", help="default: a fresh PostgreSQL database")
    parser.add_argument("--serve-peer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, 8)
        return

    drop = None
    url = args.database_url
    if url is None:
        url, drop = fresh_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    svc = start_service(tmp, url, workers=args.workers)
    port = free_port()
    peer_proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-peer", str(port)],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/ServiceProviderConfig", proc=peer_proc)
        token = svc.cli_json("scim-token", "create", "bench")["token"]
        ours = Target(f"{svc.url}/scim/v2", token, args.concurrency)
        peer = Target(f"http://127.0.0.1:{port}/v2", None, args.concurrency)
        compare(ours, peer, args.users, args.rounds)
    finally:
        svc.stop()
        peer_proc.terminate()
        peer_proc.wait(10)
        if drop is not None:
            drop()

    backend = url.split(":", 1)[0]
    print(
        f"SCIM import benchmark: {args.users} users, {args.concurrency} client threads, "
        f"{args.workers} gunicorn worker(s) for devicetrust, 1 for the peer"
    )
    print(f"{'phase':8} {'devicetrust (' + backend + ')':>26} {'scim2-server in-memory':>24} ratio")
    for phase in ("import", "lookup"):
        mine, theirs = args.users / ours.seconds[phase], args.users / peer.seconds[phase]
        print(f"{phase:8} {mine:20.0f} users/s {theirs:16.0f} users/s {mine / theirs:5.0%}")
    print(f"cpu: {os.cpu_count()} cores; clients, servers and the database share them")


if __name__ == "__main__":
    main()
