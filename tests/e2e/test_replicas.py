"""Replicas behind a real load balancer lose nothing: kill -9 of a replica, a PostgreSQL restart.

Three (or two) ``devicetrust serve`` processes, each with a data directory of its
own, share one PostgreSQL database behind Debian's HAProxy on loopback
(``bench/replicas.py`` builds the cluster and its load). The load is the login
bench's client - a browser tab and a device answering with the agent's protocol
code - plus real ``devicetrust-agent run`` processes answering challenges, and
every few rounds a client registers a new device (a decision that is audited and
sent as a webhook to a real receiver here).

Afterwards the database, the audit log, HAProxy's request log and the receiver
are checked: which sign-ins failed and why, single use of every challenge, the
audit chain, every acknowledged decision in the audit, every webhook delivered
exactly once, each periodic job at most once per interval across replicas, and a
key rotation in force on every replica from the next request on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.replicas import (
    Cluster,
    Device,
    audit_key,
    cert_id,
    enrollment_codes,
    run_load,
    setup,
)
from idp_service.platform.db import Database
from idp_service.saml import api as saml_api
from tests.procs import free_port, make_agent
from tests.webhook_receiver import Receiver

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.e2e,
    pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed"),
]

ENV = {
    "DEVICETRUST_RATELIMIT_ENABLED": "false",  # every client is one address here
    "DEVICETRUST_WEBHOOK_POLL": "0.2",
    "DEVICETRUST_WEBHOOK_TIMEOUT": "2",
    "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "DEVICETRUST_AUDIT_CHECKPOINT_INTERVAL": "2",
    "DEVICETRUST_STALE_SWEEP_INTERVAL": "1",
    "DEVICETRUST_EXPIRY_CLEANUP_INTERVAL": "1",
}
EXCLUSIVE = {"audit-seal": 1.0, "audit-checkpoint": 2.0, "stale-sweep": 1.0, "expiry-cleanup": 1.0}
RECOVERED = 5.0  # seconds the load runs on after every replica is ready again
CERT = re.compile(rb"<ds:X509Certificate>([^<]+)</ds:X509Certificate>", re.S)


def _pg(url: str) -> psycopg.Connection:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


LEASE_LOG = """
CREATE TABLE test_lease_log (name text, holder text, started timestamptz);
CREATE FUNCTION test_log_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_lease_log VALUES (NEW.name, NEW.holder, NEW.last_started_at);
    RETURN NEW;
END $$;
CREATE TRIGGER test_log_lease AFTER INSERT OR UPDATE OF holder ON job_leases
    FOR EACH ROW WHEN (NEW.holder IS NOT NULL) EXECUTE FUNCTION test_log_lease();
"""


def _lease_log(url: str) -> dict[str, list[tuple]]:
    """Every lease taken (job, holder, start), from the test's trigger on ``job_leases``:
    a run of an exclusive job starts with exactly one such write."""
    runs: dict[str, list[tuple]] = defaultdict(list)
    with _pg(url) as conn:
        for name, holder, started in conn.execute(
            "SELECT name, holder, started FROM test_lease_log ORDER BY started"
        ):
            runs[name].append((started, holder))
    return runs


def _hooks(cluster: Cluster, receiver: Receiver) -> httpx.Client:
    token = cluster.cli("api-token", "create", "hooks", "--scope", "write", "--json").stdout
    api = httpx.Client(
        base_url=cluster.url + "/api/v1",
        headers={"Authorization": f"Bearer {json.loads(token)['token']}"},
        timeout=10,
    )
    hook = receiver.add("/all")
    resp = api.post("/webhooks", json={"url": receiver.url("/all")})
    assert resp.status_code == 201, resp.text
    hook.secret = resp.json()["secret"]
    return api


def _wait_deliveries(url: str, timeout: float) -> list[tuple]:
    """Wait until no delivery is pending; return (id, event_id, status, attempts) of all."""
    deadline = time.monotonic() + timeout
    while True:
        with _pg(url) as conn:
            rows = conn.execute(
                "SELECT id, event_id, status, attempts FROM webhook_deliveries"
            ).fetchall()
        if all(r[2] != "pending" for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _audit_verify(cluster: Cluster, tmp: Path) -> dict:
    """``devicetrust audit verify`` with every replica's checkpoint file as the external copy."""
    lines = []
    for member in cluster.members:
        path = member.data_dir / "audit-checkpoints.jsonl"
        if path.exists():
            lines += path.read_text().splitlines()
    combined = tmp / "checkpoints.jsonl"
    combined.write_text("".join(line + "\n" for line in lines))
    done = cluster.cli("audit", "verify", "--checkpoints", str(combined), "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _check_decisions(url: str, results: list[dict], receiver: Receiver) -> dict:
    """Every acknowledged decision is in the audit and was delivered exactly once;
    no challenge was used twice. Returns counts for the report."""
    logins = [r for res in results for r in res["logins"]]
    regs = [r for res in results for r in res["registrations"]]
    ok = [r for r in logins if r["ok"]]
    with _pg(url) as conn:
        issued = {
            row[0]
            for row in conn.execute(
                "SELECT details->>'request_id' FROM audit_events"
                " WHERE action = 'saml.response' AND outcome = 'ok'"
            )
        }
        registered = {
            row[0]
            for row in conn.execute(
                "SELECT device_id FROM audit_events WHERE action = 'device.register'"
                " AND outcome = 'ok'"
            )
        }
        # Single use: one consumed challenge per verified transaction, and no binding twice.
        twice = conn.execute(
            "SELECT binding, count(*) FROM challenges WHERE purpose = 'authenticate'"
            " GROUP BY binding HAVING count(*) > 1"
        ).fetchall()
        consumed = conn.execute(
            "SELECT count(*) FROM challenges WHERE purpose = 'authenticate'"
        ).fetchone()[0]
        verified_rows = conn.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'login.device_verified'"
            " AND outcome = 'ok'"
        ).fetchone()[0]
        refused = conn.execute(
            "SELECT outcome, code, count(*) FROM audit_events"
            " WHERE action = 'login.device_verified' AND outcome <> 'ok' GROUP BY outcome, code"
        ).fetchall()
        completed = conn.execute(
            "SELECT count(*) FROM login_transactions WHERE completed_at IS NOT NULL"
        ).fetchone()[0]
        unsealed = conn.execute(
            "SELECT count(*) FROM audit_events WHERE chain_seq IS NULL"
        ).fetchone()[0]
    assert twice == []
    assert consumed == verified_rows, (consumed, verified_rows)
    assert completed >= len(ok)
    missing = [r["request_id"] for r in ok if r["request_id"] not in issued]
    assert missing == [], f"{len(missing)} acknowledged sign-ins are not in the audit"
    acked = [r["device_id"] for r in regs if r["ok"]]
    assert acked, "no registration was acknowledged during the run"
    assert set(acked) <= registered
    # Webhooks: each acknowledged registration's event arrived, signed, exactly once.
    received = receiver.hooks["/all"].received
    assert all(r.verified for r in received)
    by_id = Counter(r.headers["webhook-id"] for r in received)
    device_events = Counter(
        r.payload["data"].get("device_id")
        for r in received
        if r.payload["type"] == "device.registered"
    )
    assert all(device_events[d] >= 1 for d in acked), "a registration's webhook never arrived"
    return {
        "logins_ok": len(ok),
        "logins_failed": len(logins) - len(ok),
        "registrations": len(acked),
        "consumed": consumed,
        "deliveries": len(by_id),
        "duplicates": {k: v for k, v in by_id.items() if v > 1},
        "unsealed_before_verify": unsealed,
        "refused": refused,
    }


def _check_jobs(url: str, holder_replica: dict[str, str]) -> dict[str, Counter]:
    """Each exclusive job ran at most once per interval, on whichever replica got the lease."""
    runs = _lease_log(url)
    who: dict[str, Counter] = {}
    for name, every in EXCLUSIVE.items():
        starts = [started for started, _ in runs[name]]
        assert len(starts) >= 3, (name, starts)
        slack = min(every / 10, 1.0)
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        # Two runs in one interval would be a gap shorter than the interval less its slack.
        assert min(gaps) >= every - slack - 0.05, (name, gaps)
        who[name] = Counter(holder_replica.get(h.split(":")[1], "?") for _, h in runs[name])
    return who


def _published(url: str) -> set[str]:
    with httpx.Client(headers={"Connection": "close"}, timeout=10) as c:
        xml = c.get(url + "/saml/metadata").content
    return {cert_id(x) for x in CERT.findall(xml)}


def test_three_replicas_lose_nothing_when_one_is_killed(tmp_path, postgres_url):
    receiver = Receiver().__enter__()
    cluster = Cluster(tmp_path, postgres_url, replicas=3, extra_env=ENV)
    agents = []
    with _pg(postgres_url) as conn:
        conn.execute(LEASE_LOG)
    try:
        cluster.start()
        holder_replica = {str(pid): m.name for m in cluster.members for pid in m.pids()}
        _hooks(cluster, receiver)
        devices = setup(cluster, 3)
        for device in devices:
            device.extra_codes = enrollment_codes(cluster, 20)
            device.register_every = 5
        for i in range(2):  # real agents, enrolled and answering through the balancer
            agent = make_agent(tmp_path, f"laptop{i}")
            agent.enroll(cluster.url, enrollment_codes(cluster, 1)[0])
            agent.start("--no-callback")
            agents.append(agent)
            devices.append(Device(agent_port=agent.port))
        events: dict[str, float] = {}
        chosen: list = []

        def during(start: float, stop: float, _finish: object) -> None:
            # A key rotation committed outside the replicas (what `devicetrust keys rotate`
            # runs, in this process): every replica publishes the staged key, then signs
            # with the activated one, from the next request on.
            time.sleep(max(0.0, start + 2 - time.time()))
            db = Database(postgres_url)
            with audit_key(cluster):
                saml_api.rotate_keys(db, "rsa", "stage", actor="test")
                events["staged"] = time.time()
                events["published"] = {m.name: _published(m.url) for m in cluster.alive()}
                saml_api.rotate_keys(db, "rsa", "activate", actor="test")
                events["activated"] = time.time()
            db.dispose()
            time.sleep(max(2.0, start + 6 - time.time()))
            # The victim: the replica that took the latest job leases (the one whose timers
            # fire first), so that the jobs must move to another replica.
            latest = _lease_log(postgres_url)["stale-sweep"][-1][1]
            name = holder_replica[latest.split(":")[1]]
            chosen.append(next(m for m in cluster.members if m.name == name))
            events["kill"] = time.time()
            chosen[0].kill9()

        results, start, stop = run_load(cluster.url, devices, 16, during=during)
        rows = _wait_deliveries(postgres_url, 60)
        assert all(r[2] == "delivered" for r in rows), [r for r in rows if r[2] != "delivered"]
        victim = chosen[0]
        logins = [r for res in results for r in res["logins"]]
        requests = {r["req"]: r for r in cluster.requests()}

        # 1. Only sign-ins in flight on the killed replica failed, each for that reason.
        failed = [r for r in logins if not r["ok"]]
        for r in failed:
            assert r["t0"] <= events["kill"] + 1.0 and r["t1"] >= events["kill"], r
            if r["resent"]:
                # Its first copy was on a connection HAProxy closed unanswered as the
                # replica died (not logged); the copy re-sent may then be refused (a
                # challenge the dead replica had consumed is not answered twice).
                assert r["t1"] - events["kill"] < 3, r
                continue
            seen = requests.get(r["failed_rid"])
            assert seen is not None, (r, "HAProxy never received the failing request")
            assert seen["srv"] == victim.name, (r, seen)
            assert seen["st"] in ("502", "503", "-1") or seen["ts"].startswith("S"), (r, seen)
        assert len(failed) <= len(devices)  # at most one request in flight per client
        ok = [r for r in logins if r["ok"]]
        assert len(ok) >= 30, len(ok)
        after = {r["replica"] for r in ok if r["t0"] > events["kill"] + 2}
        assert after == {m.name for m in cluster.alive()}, after
        assert victim.name in {r["replica"] for r in ok if r["t1"] < events["kill"]}
        real = [r for r in ok if r["rid"].startswith(("c3-", "c4-"))]
        assert len(real) >= 4, "the real agents' sign-ins did not go through"

        # 2-5. The database, the audit and the webhooks.
        counts = _check_decisions(postgres_url, results, receiver)
        report = _audit_verify(cluster, tmp_path)
        assert report["ok"] is True and report["problems"] == []
        # A delivery sent twice must have been in flight on the killed replica: its first
        # copy arrived before the kill and the second after that claim's lease lapsed.
        received = receiver.hooks["/all"].received
        for event_id in counts["duplicates"]:
            times = sorted(r.at for r in received if r.headers["webhook-id"] == event_id)
            assert len(times) == 2 and times[1] - times[0] >= 30, (event_id, times)

        # 6. Jobs: at most once per interval; after the kill each one runs on a live replica
        # (within one lease, 30 s, if the victim died holding it).
        deadline = time.monotonic() + 35
        while True:
            runs = _lease_log(postgres_url)
            moved = {
                name: [h for s, h in runs[name] if s.timestamp() > events["kill"]]
                for name in EXCLUSIVE
            }
            if all(moved.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        who = _check_jobs(postgres_url, holder_replica)
        for name, holders in moved.items():
            assert holders, f"{name} never ran after the kill"
            assert victim.name not in {holder_replica.get(h.split(":")[1]) for h in holders}

        # 7. The key rotation: staged key in every live replica's metadata at once; every
        # sign-in that reached /continue after the activation committed was signed with it.
        published = events["published"]
        assert len({frozenset(v) for v in published.values()}) == 1, published
        assert len(published) == 3 and all(len(v) == 2 for v in published.values()), published
        late = [r for r in ok if r["t_cont"] > events["activated"]]
        assert {r["replica"] for r in late} == {m.name for m in cluster.members}
        new_cert = {r["cert"] for r in late}
        assert len(new_cert) == 1 and new_cert <= next(iter(published.values())), new_cert
        early = {r["cert"] for r in ok if r["t1"] < events["staged"]}
        assert early and early.isdisjoint(new_cert)
        for member in cluster.alive():
            assert "Traceback" not in cluster.log(member), cluster.log(member)[-3000:]
        print(
            f"\nkill -9 of {victim.name}: {counts}, failed sign-ins: {len(failed)}, requests"
            f" sent again after HAProxy closed a reused connection:"
            f" {sum(res['retries'] for res in results)},"
            f" jobs by replica: { {k: dict(v) for k, v in who.items()} }, failures:"
            f" {[(r['failed_rid'], r['error'][:80], r['resent']) for r in failed]}"
        )
    finally:
        for agent in agents:
            agent.stop()
        cluster.stop()
        receiver.__exit__(None, None, None)


# ---- PostgreSQL restart: a private cluster the test starts, never the shared server ---------


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl, as the ``postgres`` user when run
    as root, which initdb refuses), on a free loopback port, in a temporary directory."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql")
        self.bin = bins[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="devicetrust-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-o", opts, "-w", "start")  # fmt: skip

    def init(self) -> PrivatePostgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-instructions")  # fmt: skip
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE devicetrust")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False)  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/devicetrust"

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Readiness:
    """Polls each replica's ``/readyz`` (5 per second), keeping (time, replica, status)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=3) as client:
            while not self._stop.is_set():
                for m in self.cluster.members:
                    try:
                        status = client.get(m.url + "/readyz").status_code
                    except httpx.HTTPError:
                        status = 0
                    self.seen.append((time.time(), m.name, status))
                self._stop.wait(0.2)

    def ready_since(self, name: str, since: float) -> bool:
        """``name`` answered 200 in its latest poll after ``since``."""
        latest = [s for t, n, s in list(self.seen) if n == name and t > since]
        return bool(latest) and latest[-1] == 200

    def __enter__(self) -> Readiness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_replicas_recover_on_their_own_when_postgresql_restarts(tmp_path):
    pg = PrivatePostgres()
    receiver = Receiver().__enter__()
    cluster = Cluster(tmp_path, pg.url, replicas=2, extra_env=ENV)
    try:
        pg.init()
        cluster.start()
        _hooks(cluster, receiver)
        devices = setup(cluster, 3)
        for device in devices:
            device.extra_codes = enrollment_codes(cluster, 20)
            device.register_every = 4
        events: dict[str, float] = {}

        with Readiness(cluster) as ready:

            def during(start: float, stop: float, finish: Callable[[], None]) -> None:
                time.sleep(max(0.0, start + 3 - time.time()))
                events["down"] = time.time()
                pg.stop("immediate")  # as if it crashed: recovery replays the WAL on start
                time.sleep(2)
                pg.start()
                events["up"] = time.time()
                # Run on until every replica has been ready again for RECOVERED seconds.
                while time.time() < stop and not all(
                    ready.ready_since(m.name, events["up"]) for m in cluster.members
                ):
                    time.sleep(0.2)
                events["ready"] = time.time()
                time.sleep(RECOVERED)
                finish()

            results, start, stop = run_load(cluster.url, devices, 60, during=during)
            rows = _wait_deliveries(pg.url, 60)
        assert all(r[2] == "delivered" for r in rows), [r for r in rows if r[2] != "delivered"]

        # Readiness said so: every replica was unready during the outage, ready after it.
        for m in cluster.members:
            during_outage = [s for t, n, s in ready.seen if n == m.name and
                             events["down"] + 0.5 < t < events["up"] - 0.2]  # fmt: skip
            assert during_outage and all(s == 503 for s in during_outage), during_outage
            last = [s for t, n, s in ready.seen if n == m.name and t > events["ready"]]
            assert last and all(s == 200 for s in last), last

        # The service recovered on its own: sign-ins failed only around the outage, and
        # every replica served sign-ins again after it.
        logins = [r for res in results for r in res["logins"]]
        failed = [r for r in logins if not r["ok"]]
        assert events["ready"] - events["up"] < 15, "the replicas took too long to recover"
        # HAProxy sends traffic again after two passing checks 0.5 s apart (``rise 2``).
        recovered_by = events["ready"] + 2.0
        late = [r for r in failed if r["t0"] > recovered_by or r["t1"] < events["down"]]
        assert late == [], [
            (round(r["t0"] - events["ready"], 2), r["failed_rid"], r["error"][:200]) for r in late
        ]
        ok = [r for r in logins if r["ok"]]
        assert {r["replica"] for r in ok if r["t0"] > recovered_by} == {"r1", "r2"}

        # Nothing acknowledged was lost: the audit holds every acknowledged decision
        # (after a crash and WAL recovery), the chain verifies, webhooks arrived.
        counts = _check_decisions(pg.url, results, receiver)
        # Delivery is at least once, deduplicated by webhook-id (docs/events.md): a copy
        # sent twice must have had its first copy in flight when the database went away
        # (delivered, but the replica could not record it), and its second after that.
        received = receiver.hooks["/all"].received
        wall = time.time() - time.monotonic()  # the receiver stamps monotonic time
        for event_id in counts["duplicates"]:
            times = sorted(r.at + wall for r in received if r.headers["webhook-id"] == event_id)
            assert len(times) == 2, (event_id, times)
            assert events["down"] - 2 <= times[0] <= events["up"] + 2 < times[1], (
                event_id,
                [round(t - events["down"], 2) for t in times],
                round(events["up"] - events["down"], 2),
            )
        report = _audit_verify(cluster, tmp_path)
        assert report["ok"] is True and report["problems"] == []
        print(
            f"\nPostgreSQL restart: {counts}, failed sign-ins: {len(failed)}, down"
            f" {events['up'] - events['down']:.1f} s, every replica ready"
            f" {events['ready'] - events['up']:.1f} s after it was back"
        )
    finally:
        cluster.stop()
        receiver.__exit__(None, None, None)
        pg.close()
