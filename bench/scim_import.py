"""SCIM import benchmark: our SQL-backed endpoint against scim2-server's in-memory peer.

Imports N users by SCIM POST over HTTP, then looks each one up with a
``userName eq`` filter, and prints users/s for both phases, for devicetrust
(the service's Flask app, on PostgreSQL by default, with bearer auth and one
audit event per request) and for scim2-server's ``InMemoryStorage`` application
with the same provider and service. Both are served by this script's one
gunicorn launcher with one set of settings (:data:`SERVER`, those of
``devicetrust serve``), so the comparison is like for like; the ratio is
ours/peer. Slices of each phase alternate between the two, so load from
elsewhere on the machine falls on both alike.

It also prints where the CPU went per request, for each side: the server
worker, the PostgreSQL backends serving it, and the client threads; and the
ratio of the two workers' CPU per request (peer/ours), which is what the rate
ratio tends to when nothing else competes for the cores, and is far steadier
than the rate ratio on a shared machine.

    python bench/scim_import.py                 # 10,000 users, fresh PostgreSQL database
    python bench/scim_import.py --users 2000 --database-url sqlite:////tmp/b.db
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.procs import ServiceProc, base_env, free_port, wait_http  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
TLS = ssl.create_default_context()  # unused (plain HTTP); made once, not per client
# The gunicorn settings of `devicetrust serve` (idp_service/cli.py), for both sides.
# One worker: the in-memory peer keeps its data in one process.
SERVER: dict[str, Any] = {
    "workers": 1,
    "worker_class": "gthread",
    "threads": 8,
    "timeout": 30,
    "graceful_timeout": 5,
    "accesslog": None,
}


def peer_app() -> Any:
    """scim2-server's in-memory application with our provider and service."""
    from scim2_server.applications.wsgi import WSGIApplication
    from scim2_server.memory import InMemoryStorage

    from scim.provider import build_provider
    from scim.service import DevicetrustScimService

    provider = build_provider()
    return WSGIApplication(InMemoryStorage(), provider, DevicetrustScimService(provider))


def ours_app() -> Any:
    """The service's Flask app, SCIM mounted at /scim, configured from the environment."""
    from idp_service.app import create_app

    return create_app()


def serve(load: Callable[[], Any], port: int) -> None:
    """Serve ``load()`` on ``port`` under gunicorn with :data:`SERVER`."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            for key, value in SERVER.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    Server().run()


def launch(kind: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``kind`` ("ours" or "peer") in its own gunicorn process."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


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


class CpuMeter:
    """CPU seconds used by the server's workers, its database backends and the client."""

    def __init__(self, server: psutil.Process, backends: Callable[[], list[int]]) -> None:
        self.server = server
        self.backends = backends
        self.client = psutil.Process()
        self.last: dict[int, float] = {}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system

    def sample(self) -> dict[str, float]:
        """CPU seconds by part since the previous sample (a new process counts in full)."""
        parts: dict[str, list[psutil.Process]] = {
            "server": self.server.children(),
            "database": [psutil.Process(pid) for pid in self.backends() if psutil.pid_exists(pid)],
            "client": [self.client],
        }
        used: dict[str, float] = {}
        for part, procs in parts.items():
            used[part] = 0.0
            for proc in procs:
                now = self._cpu(proc)
                used[part] += max(0.0, now - self.last.get(proc.pid, 0.0))
                self.last[proc.pid] = now
        return used


class Target:
    """One endpoint under test, with its client threads, its timings and its CPU."""

    def __init__(self, base_url: str, token: str | None, concurrency: int, meter: CpuMeter) -> None:
        headers = {"Content-Type": "application/scim+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url, self.headers, self.concurrency = base_url, headers, concurrency
        self.clients: list[httpx.Client] = []
        self.run = uuid.uuid4().hex[:6]
        self.meter = meter
        self.seconds = {"import": 0.0, "lookup": 0.0}
        self.cpu: dict[str, dict[str, float]] = {
            p: {"server": 0.0, "database": 0.0, "client": 0.0} for p in self.seconds
        }

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
        """Run one slice of a phase on every client thread, and add its time and CPU."""
        work = self._create if name == "import" else self._lookup
        # Fresh connections per slice: one kept idle while the other side ran its
        # slice may be closed by the server (keep-alive) just as it is reused.
        self.clients = [
            httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60, verify=TLS)
            for _ in range(self.concurrency)
        ]
        self.meter.sample()
        started = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(lambda k: work(k, indexes), range(self.concurrency)))
        self.seconds[name] += time.perf_counter() - started
        for part, seconds in self.meter.sample().items():
            self.cpu[name][part] += seconds
        for client in self.clients:
            client.close()


def compare(ours: Target, peer: Target, n: int, rounds: int) -> None:
    """Alternate slices between the two endpoints, so load from elsewhere on the
    machine falls on both alike."""
    slices = [list(range(n))[r::rounds] for r in range(rounds)]
    for name in ("import", "lookup"):
        for indexes in slices:
            ours.phase(name, indexes)
            peer.phase(name, indexes)


def fresh_postgres() -> tuple[str, Callable[[], None]]:
    from pytest_postgresql.janitor import DatabaseJanitor

    name = f"devicetrust_bench_{uuid.uuid4().hex[:8]}"
    janitor = DatabaseJanitor(user="postgres", host="127.0.0.1", port=5432, dbname=name)
    janitor.init()
    return f"postgresql://postgres@127.0.0.1:5432/{name}", janitor.drop


def backend_pids(url: str) -> Callable[[], list[int]]:
    """The PostgreSQL backend pids connected to ``url``'s database (none for SQLite)."""
    if not url.startswith("postgresql"):
        return list
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    monitor = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    monitor.autocommit = True

    def pids() -> list[int]:
        rows = monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
        return [r[0] for r in rows]

    return pids


def report(args: argparse.Namespace, backend: str, ours: Target, peer: Target, load: tuple) -> None:
    settings = ", ".join(f"{k}={v}" for k, v in SERVER.items() if k != "accesslog")
    print(
        f"SCIM import benchmark: {args.users} users, {args.concurrency} client threads; "
        f"both sides served by the same gunicorn settings ({settings})"
    )
    print(f"{'phase':8} {'devicetrust (' + backend + ')':>26} {'scim2-server in-memory':>24} ratio")
    for phase in ("import", "lookup"):
        mine, theirs = args.users / ours.seconds[phase], args.users / peer.seconds[phase]
        print(f"{phase:8} {mine:20.0f} users/s {theirs:16.0f} users/s {mine / theirs:5.0%}")
    print(
        "CPU per request, ms (server worker / database backends / client threads), "
        "and the workers' ratio (peer/ours):"
    )
    for phase in ("import", "lookup"):
        cells = []
        for target in (ours, peer):
            cpu = target.cpu[phase]
            cells.append(" / ".join(f"{1000 * cpu[p] / args.users:.2f}" for p in cpu))
        # One worker bounds each side: the ratio of its CPU per request is the
        # rate ratio on a machine with nothing else to run, and varies far less.
        bound = peer.cpu[phase]["server"] / max(ours.cpu[phase]["server"], 1e-9)
        print(f"{phase:8} {cells[0]:>26} {cells[1]:>24} {bound:5.0%}")
    after = os.getloadavg()
    print(
        f"cpu: {os.cpu_count()} cores shared by clients, servers and the database; "
        f"load average {load[0]:.1f} before, {after[0]:.1f} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--rounds", type=int, default=10, help="slices alternated per phase")
    parser.add_argument("--database-url", help="default: a fresh PostgreSQL database")
    parser.add_argument("--serve", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.users, args.rounds, args.concurrency = 40, 2, 2
    if args.serve:
        serve(ours_app if args.serve == "ours" else peer_app, args.port)
        return

    load = os.getloadavg()
    drop = None
    url = args.database_url
    if url is None:
        url, drop = fresh_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    ours_port, peer_port = free_port(), free_port()
    env = base_env(
        DEVICETRUST_DATABASE_URL=url,
        DEVICETRUST_DATA_DIR=str(tmp / "service-data"),
        DEVICETRUST_PUBLIC_URL=f"http://127.0.0.1:{ours_port}",
    )
    subprocess.run(
        [sys.executable, "-m", "idp_service", "migrate"], env=env, check=True, capture_output=True
    )
    procs = [launch("ours", ours_port, env, tmp / "ours.log")]
    procs.append(launch("peer", peer_port, base_env(), tmp / "peer.log"))
    try:
        svc = ServiceProc(f"http://127.0.0.1:{ours_port}", env, procs[0], tmp / "ours.log")
        wait_http(f"{svc.url}/readyz", proc=procs[0])
        wait_http(f"http://127.0.0.1:{peer_port}/v2/ServiceProviderConfig", proc=procs[1])
        token = svc.cli_json("scim-token", "create", "bench")["token"]
        ours = Target(
            f"{svc.url}/scim/v2",
            token,
            args.concurrency,
            CpuMeter(psutil.Process(procs[0].pid), backend_pids(url)),
        )
        peer = Target(
            f"http://127.0.0.1:{peer_port}/v2",
            None,
            args.concurrency,
            CpuMeter(psutil.Process(procs[1].pid), list),
        )
        compare(ours, peer, args.users, args.rounds)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        if drop is not None:
            drop()
    report(args, url.split(":", 1)[0], ours, peer, load)


if __name__ == "__main__":
    main()
