"""Benchmark: posture reports per second over HTTP into PostgreSQL, with the catalog evaluated.

Issue 5 §7. Target: at least 2,000 reports/s on the 2-core machine (600,000
devices reporting every 5 minutes on one node).

What runs:

* the service under gunicorn (``devicetrust serve``, gthread workers), and beside it
  the report ingest tier (``devicetrust serve-ingest``, granian; ``--tier``), on a
  scratch PostgreSQL database, with the built-in catalog enforced
  (``DEVICETRUST_BUILTIN_CHECKS=all``: 17 checks evaluated at ingest);
* ``--devices`` simulated devices, **registered through the real enrollment
  ceremony** over HTTP (an enrollment code per device, made in the database as
  an admin would; then ``POST /agent/v1/challenges`` and ``POST
  /agent/v1/register`` with the device's own keys), each followed by its first
  report, so that what is measured is the steady state of known devices;
* realistic fact documents: this machine's real facts (``collect_facts()``,
  ~900 dpkg packages) and the recorded devices under
  ``tests/fixtures/posture/`` (LUKS, ZFS, macOS, Windows), each device with its
  own identity and its own package map (800-1,200 packages on Linux, 120-250
  applications on macOS, 150-300 programs on Windows). Every report has a new
  ``collected_at`` and a larger ``uptime_seconds``; ``--change-rate`` of the
  reports (2 % by default) also carry a real change (a package upgraded,
  installed or removed, the screen-lock timeout, the firewall, the EDR, an OS
  update), which stays in that device's later reports;
* ``--clients`` load-generator processes playing the agents, each on one
  keep-alive HTTP connection, in both report versions back to back (issue 16;
  ``--protocols``): **v2** first, one request per report built with the real
  agent code (``trust_protocol.report_v2``: counter, digest, only the changed
  sections, sealed to the advertised report box key; the signed acknowledgement
  checked), then **v1**: ``POST /agent/v1/report/challenge``, verify the
  challenge's signature, seal the signed report (``trust_protocol.seal_response``),
  ``POST /agent/v1/report``. Each enrolled device's first reports are one of each.

It also measures the crypto ceiling of a report in the same run (box open plus
one signature check, per core, times two) and prints the bytes on the wire per
report (unchanged, delta, full, against v1) and the line
``ratio reports / crypto ceiling: NN %``.

And the floor of an unchanged v2 report, also measured in the run: what the design
itself asks (the agent's digest, seal and acknowledgement check; the service's box,
signature and acknowledgement signature), one HTTP exchange with a do-nothing app
on the same HTTP server (``bench/_bare_wsgi.py`` on granian, the ``bare`` phase) and
PostgreSQL's CPU per report; with everything else free, that floor bounds the ratio
this design can reach on these cores (``ratio bound from the floor``).

It prints reports/s and the ratio to 2,000/s, the CPU spent per report by each
process group (gunicorn workers, PostgreSQL backends, load generator, the
whole machine), and an in-process breakdown of one report's service time
(crypto, JSON, database, check evaluation), so that what limits ingest is
visible.

Usage: python bench/ingest.py [--devices 2000] [--seconds 20] [--clients 6]
       [--workers 2] [--change-rate 0.02] [--skip-http]
       [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 2000.0
FIXTURES = ROOT / "tests" / "fixtures" / "posture"
REPORT_INTERVAL = 300


# ---- the fleet: realistic, varied fact documents ---------------------------------------------


def templates() -> list[dict[str, Any]]:
    """This machine's real facts plus every recorded device's (one document per platform case)."""
    from agent.collectors import collect_facts
    from agent.collectors.base import Host

    docs = [collect_facts()]
    for case in sorted(FIXTURES.glob("*/*")):
        if (case / "host.json").is_file():
            docs.append(collect_facts(Host.from_recording(case)))
    return docs


def _version(rng: random.Random) -> str:
    return f"{rng.randint(0, 30)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}"


def _bump(version: str, rng: random.Random) -> str:
    return f"{version}+u{rng.randint(1, 9)}" if rng.random() < 0.5 else version + ".1"


def make_document(
    template: dict[str, Any], index: int, rng: random.Random, linux_packages: dict[str, str]
) -> dict[str, Any]:
    """A device's own document from a template: identity, package map and a few settings."""
    doc = copy.deepcopy(template)
    family = (doc.get("os") or {}).get("family")
    doc["hostname"] = f"{family or 'host'}-{index:06d}"
    hw = doc.get("hardware") or {}
    hw.update(serial=f"SN{index:010d}", hardware_uuid=str(uuid.UUID(int=rng.getrandbits(128))))
    doc["hardware"] = hw
    doc["uptime_seconds"] = rng.randint(600, 30 * 86400)
    packages = doc.get("packages") or {"manager": None, "truncated": False}
    installed = dict(packages.get("installed") or {})
    if family == "linux":
        names = list(linux_packages)
        keep = rng.sample(names, k=len(names) - rng.randint(0, 60))
        installed.update({n: linux_packages[n] for n in keep})
        for i in range(rng.randint(0, 300)):
            installed[f"lib{rng.choice(['x', 'gnome', 'kde', 'py', 'perl'])}-{i}-{index % 97}"] = (
                _version(rng)
            )
        for name in rng.sample(list(installed), k=len(installed) // 20):
            installed[name] = _bump(installed[name], rng)
    else:
        low, high = (120, 250) if family == "macos" else (150, 300)
        for i in range(rng.randint(low, high) - len(installed)):
            installed[f"Application {i:03d} ({index % 13})"] = _version(rng)
    packages["installed"] = dict(sorted(installed.items()))
    packages["count"] = len(installed)
    doc["packages"] = packages
    return doc


def apply_change(doc: dict[str, Any], rng: random.Random) -> str:
    """One real change to a device's facts, of a kind and frequency seen in fleets."""
    roll = rng.random()
    packages = doc.get("packages") or {}
    installed = packages.get("installed") or {}
    if roll < 0.6 and installed:
        name = rng.choice(list(installed))
        installed[name] = _bump(installed[name], rng)
        return "package upgrade"
    if roll < 0.75 and installed:
        if rng.random() < 0.5:
            installed.pop(rng.choice(list(installed)))
        else:
            installed[f"new-tool-{rng.getrandbits(32):08x}"] = _version(rng)
        packages["installed"] = dict(sorted(installed.items()))
        packages["count"] = len(installed)
        return "package install/remove"
    if roll < 0.85 and isinstance(doc.get("screen_lock"), dict):
        lock = doc["screen_lock"]
        lock["max_timeout_seconds"] = rng.choice(
            [t for t in (120, 300, 600, 900, 1800) if t != lock.get("max_timeout_seconds")]
        )
        return "screen lock"
    if roll < 0.9 and isinstance(doc.get("firewall"), dict):
        doc["firewall"]["enabled"] = not doc["firewall"].get("enabled")
        return "firewall"
    if roll < 0.95 and isinstance(doc.get("security_software"), dict):
        sec = doc["security_software"]
        sec["edr_running"] = not sec.get("edr_running")
        return "edr"
    if isinstance(doc.get("os"), dict):
        doc["os"]["kernel"] = f"{doc['os'].get('kernel') or '6.1'}.{rng.randint(1, 9)}"
        return "os update"
    return "none"


def _now_z() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---- the load generator: one process = one keep-alive connection, many devices -----------------


class _Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path: str, body: bytes, ctype: str = "") -> tuple[int, bytes]:
        headers = {"Content-Type": ctype} if ctype else {}
        self.conn.request("POST", path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def reset(self) -> None:
        self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)


def _client(
    base: str,
    report_base: str,
    codes: list[str],
    docs: list[dict[str, Any]],
    seed: int,
    schedule: Any,
    change_rate: float,
    out: Any,
    bare_base: str | None = None,
) -> None:
    from nacl.signing import VerifyKey

    from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, report_v2, seal_response
    from trust_protocol.encoding import b64d

    rng = random.Random(seed)
    conn = _Conn(base)
    rconn = _Conn(report_base)  # v2 reports: the ingest tier, or the service itself
    _, info = conn.get("/agent/v1/server")
    verify_key = VerifyKey(b64d(json.loads(info)["server_key"], length=32))
    # Report v2: the advertised box key, checked under the pinned key as the agent does.
    report_box = report_v2.open_report_key(json.loads(info)["report"], verify_key)
    instance = f"{seed:016x}"  # one agent process per device in reality; one id per client here
    wire: dict[str, list[int]] = {}  # kind -> [reports, bytes of request and answer bodies]

    def count(kind: str, nbytes: int) -> None:
        entry = wire.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += nbytes

    def report2(keys: Any, platform: dict[str, str], doc: dict[str, Any], st: dict) -> None:
        """One v2 report as the agent sends it: the smallest that fits, then the ack."""
        document, volatile = report_v2.split_volatile(doc)
        full = False
        for _ in range(3):
            st["counter"] += 1
            body = report_v2.make_report(
                device_id=keys.device_id,
                counter=st["counter"],
                clock=time.time(),
                agent_version="0.1.0",
                platform=platform,
                document=document,
                volatile=volatile,
                acked=st["acked"],
                acked_digest=st["digest"],
                full=full,
            )
            sealed = report_v2.seal_report(body, keys.signing_key, report_box)
            path = "/agent/v2/report/full" if body.kind == "full" else "/agent/v2/report"
            status, reply = rconn.post(path, sealed, "application/json")
            count("v2 " + body.kind, len(sealed) + len(reply))
            if status == 409 and b"report_resync" in reply:
                full = True
                continue
            assert status == 200, reply[:300]
            ack = report_v2.open_ack(json.loads(reply), verify_key)
            assert ack.counter == body.counter
            if ack.digest != st["digest"]:  # a copy: the bench changes its documents in place
                st["acked"] = copy.deepcopy(document) if ack.digest == body.digest else None
            st["digest"] = ack.digest
            return
        raise AssertionError("no acknowledgement after a full document")

    def report(keys: Any, platform: dict[str, str], doc: dict[str, Any]) -> None:
        status, issued = conn.post(
            "/agent/v1/report/challenge",
            json.dumps({"device_id": keys.device_id}).encode(),
            "application/json",
        )
        assert status == 200, issued
        token = json.loads(issued)["challenge"]
        challenge = parse_challenge(token, verify_key)
        assert challenge.binding == "device:" + keys.device_id
        body = ResponseBody(
            token, keys.public_json(), platform, "0.1.0", time.time(), {"facts": doc}
        )
        sealed = seal_response(body, challenge, keys)
        status, reply = conn.post("/agent/v1/report", sealed)
        assert status == 200 and b'"accepted"' in reply, reply[:300]
        count("v1", len(issued) + len(keys.device_id) + 17 + len(sealed) + len(reply))

    # Enrollment: the real ceremony, one device at a time, each followed by the device's
    # first report (as the agent does once enrolled), so that the measured reports are the
    # steady state of devices the service already knows.
    devices = []
    for code, doc in zip(codes, docs, strict=True):
        keys = DeviceKeys.generate(str(uuid.uuid4()))
        platform = {
            "hardware_uuid": doc["hardware"]["hardware_uuid"],
            "serial": doc["hardware"]["serial"],
            "hostname": doc["hostname"],
            "os": (doc.get("os") or {}).get("family") or "linux",
            "instance": instance,
        }
        _, issued = conn.post("/agent/v1/challenges", b'{"purpose":"register"}', "application/json")
        token = json.loads(issued)["challenge"]
        body = ResponseBody(
            token, keys.public_json(), platform, "0.1.0", time.time(), {"enrollment_code": code}
        )
        status, reply = conn.post(
            "/agent/v1/register", seal_response(body, parse_challenge(token, verify_key), keys)
        )
        assert status == 201, reply
        doc["collected_at"] = _now_z()
        report(keys, platform, doc)
        state = {"counter": 0, "acked": None, "digest": None}
        report2(keys, platform, doc, state)  # v2's first report: the whole document
        devices.append((keys, platform, doc, state))
    out.put(("registered", len(devices)))
    phases = schedule.get()  # every client has enrolled its devices: the schedule is set
    conn.reset()  # the server may have closed the idle keep-alive connection meanwhile
    rconn.reset()

    def challenge_only(keys: Any) -> None:
        status, issued = conn.post(
            "/agent/v1/report/challenge",
            json.dumps({"device_id": keys.device_id}).encode(),
            "application/json",
        )
        assert status == 200, issued
        parse_challenge(json.loads(issued)["challenge"], verify_key)

    def healthz() -> None:
        status, _ = conn.get("/healthz")
        assert status == 200

    # The HTTP floor: a report-sized POST to a do-nothing app on the tier's server.
    bconn = _Conn(bare_base) if bare_base else None
    sample = {"body": b""}

    def bare() -> None:
        assert bconn is not None
        status, answer = bconn.post("/agent/v2/report", sample["body"], "application/json")
        assert status == 200 and answer

    def unchanged_sample(
        keys: Any, platform: dict[str, str], doc: dict[str, Any], st: dict
    ) -> bytes:
        """A sealed unchanged report as this device would send it (never sent to the service)."""
        args = unchanged_args(keys, doc, counter=st["counter"] + 1, platform=platform)
        body = report_v2.make_report(clock=time.time(), **args)
        return report_v2.seal_report(body, keys.signing_key, report_box)

    i = rng.randrange(len(devices))
    for mode, _begin, measure_from, end in phases:
        done = failed = changes = 0
        wire.clear()
        measuring = False
        cpu0, t0 = time.process_time(), time.time()
        while True:
            now = time.time()
            if not measuring and now >= measure_from:
                measuring, done, failed, changes = True, 0, 0, 0
                wire.clear()
                cpu0, t0 = time.process_time(), now
            if now >= end:
                break
            keys, platform, doc, state = devices[i % len(devices)]
            i += 1
            try:
                if mode in ("report", "report2"):
                    doc["collected_at"] = _now_z()
                    doc["uptime_seconds"] = doc.get("uptime_seconds", 0) + REPORT_INTERVAL
                    if rng.random() < change_rate:
                        apply_change(doc, rng)
                        changes += 1
                    if mode == "report":
                        report(keys, platform, doc)
                    else:
                        report2(keys, platform, doc, state)
                elif mode == "challenge":
                    challenge_only(keys)
                elif mode == "bare":
                    if not sample["body"]:
                        sample["body"] = unchanged_sample(keys, platform, doc, state)
                    bare()
                else:
                    healthz()
                done += 1
            except (AssertionError, OSError, http.client.HTTPException) as exc:
                failed += 1
                if failed < 3:
                    print(f"{mode} failed: {exc!r}"[:300], file=sys.stderr)
                if isinstance(exc, OSError | http.client.HTTPException):
                    conn.reset()
                    rconn.reset()
                    if bconn is not None:
                        bconn.reset()
        out.put(
            (
                mode,
                done,
                failed,
                changes,
                time.time() - t0,
                time.process_time() - cpu0,
                {k: list(v) for k, v in wire.items()},
            )
        )


# ---- CPU accounting of the processes involved --------------------------------------------------


def _cpu(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001, S112 - a process that ended counts as nothing more
            continue
    return total


def _pg_backends(dbname: str) -> list[Any]:
    import psutil

    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.info.get("name") == "postgres" or cmd.startswith("postgres:"):
            if f" {dbname} " in cmd:
                found.append(p)
    return found


def _pg_shared() -> list[Any]:
    """PostgreSQL's own background processes (WAL writer, checkpointer...): shared by all."""
    import psutil

    names = ("walwriter", "checkpointer", "background writer", "autovacuum")
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(n in " ".join(p.info.get("cmdline") or []) for n in names)
    ]


def _machine_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + t.nice


# ---- the HTTP run -----------------------------------------------------------------------------


def http_ingest(pg_url: str, args: argparse.Namespace, docs: list[dict[str, Any]]) -> dict:
    """Run the fleet against gunicorn on ``pg_url``; return rates and CPU per report."""
    import psutil
    import psycopg
    from sqlalchemy.engine import make_url

    from idp_service.devices import enroll
    from idp_service.directory import users
    from idp_service.platform.db import Database
    from tests.procs import start_ingest, start_service

    dbname = make_url(pg_url).database
    with tempfile.TemporaryDirectory() as tmp:
        svc = start_service(
            Path(tmp),
            pg_url,
            workers=args.workers,
            extra_env={
                "DEVICETRUST_BUILTIN_CHECKS": "all",
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
            },
        )
        tier = bare = None
        try:
            if args.tier == "ingest":
                tier = start_ingest(Path(tmp), svc, workers=args.workers, threads=args.threads)
            report_url = tier.url if tier is not None else svc.url
            if "v2" in args.protocols and args.floor_seconds > 0:
                bare = _start_bare(Path(tmp), args.workers, args.threads)
            db = Database(pg_url)
            codes = []
            with db.session() as s:
                for i in range(args.devices):
                    user = users.create(s, f"bench{i}-{uuid.uuid4().hex[:6]}@example.com")
                    codes.append(enroll.create_code(s, user, ttl_seconds=3600)[0])
            db.dispose()
            queue: mp.Queue = mp.Queue()
            schedules = [mp.Queue() for _ in range(args.clients)]
            per = [list(range(c, args.devices, args.clients)) for c in range(args.clients)]
            procs = [
                mp.Process(
                    target=_client,
                    args=(
                        svc.url,
                        report_url,
                        [codes[i] for i in idx],
                        [docs[i] for i in idx],
                        1000 + c,
                        schedules[c],
                        args.change_rate,
                        queue,
                        bare[0] if bare is not None else None,
                    ),
                )
                for c, idx in enumerate(per)
            ]
            for p in procs:
                p.start()
            registered = sum(queue.get(timeout=1800)[1] for _ in procs)
            # The fleet was enrolled a moment ago into tables the database still believes
            # empty; refresh the planner's statistics, as autovacuum would within minutes
            # and as any operator does after a bulk load. (Without this, a lookup by primary
            # key can be planned as a scan of every trusted device.)
            url = make_url(pg_url)
            with psycopg.connect(
                host=url.host, port=url.port or 5432, user=url.username, dbname=url.database
            ) as conn:
                conn.execute("ANALYZE")
            phases, t = [], time.time() + 0.5
            for mode, seconds in (
                ("report2", args.seconds if "v2" in args.protocols else 0),
                ("report", args.seconds if "v1" in args.protocols else 0),
                ("challenge", args.floor_seconds),
                ("healthz", args.floor_seconds),
                ("bare", args.floor_seconds if bare is not None else 0),
            ):
                warm = args.warmup if mode.startswith("report") else 1.0
                if seconds > 0:
                    phases.append((mode, t, t + warm, t + warm + seconds))
                    t += warm + seconds
            for schedule in schedules:
                schedule.put(phases)
            servers = [psutil.Process(svc.proc.pid)]
            if tier is not None:
                servers.append(psutil.Process(tier.proc.pid))
            cpu: dict[str, Any] = {}
            for mode, _, measure_from, end in phases:
                while time.time() < measure_from:
                    time.sleep(0.01)
                measured = [psutil.Process(bare[1].pid)] if mode == "bare" and bare else servers
                workers = [x for s in measured for x in (s, *s.children(recursive=True))]
                backends = _pg_backends(dbname)
                shared = _pg_shared()
                load0 = os.getloadavg()
                cpu0 = (_cpu(workers), _cpu(backends), _cpu(shared), _machine_busy())
                while time.time() < end:
                    time.sleep(0.05)
                cpu1 = (_cpu(workers), _cpu(backends), _cpu(shared), _machine_busy())
                cpu[mode] = (
                    [b - a for a, b in zip(cpu0, cpu1, strict=True)],
                    load0,
                    os.getloadavg(),
                )
            results = [
                queue.get(timeout=args.seconds + 120) for _ in range(len(procs) * len(phases))
            ]
            for p in procs:
                p.join(10)
        finally:
            if bare is not None:
                _stop(bare[1])
            if tier is not None:
                tier.stop()
            svc.stop()
    figures: dict[str, Any] = {"registered": registered}
    for mode, _, _, _ in phases:
        rows = [r for r in results if r[0] == mode]
        done = sum(r[1] for r in rows)
        elapsed = max(r[4] for r in rows)
        per = 1000.0 / max(done, 1)
        (service, pg, pg_shared, machine), load0, load1 = cpu[mode]
        wire: dict[str, list[int]] = {}
        for r in rows:
            for kind, (count, nbytes) in r[6].items():
                entry = wire.setdefault(kind, [0, 0])
                entry[0] += count
                entry[1] += nbytes
        figures[mode] = {
            "rate": done / elapsed,
            "done": done,
            "failed": sum(r[2] for r in rows),
            "changes": sum(r[3] for r in rows),
            "cpu_service_ms": service * per,
            "cpu_pg_ms": pg * per,
            "cpu_pg_shared_ms": pg_shared * per,
            "cpu_loadgen_ms": sum(r[5] for r in rows) * per,
            "cpu_machine_ms": machine * per,
            "machine_cores_busy": machine / elapsed,
            "load": (load0, load1),
            "wire": wire,
        }
    return figures


def _start_bare(tmp: Path, workers: int, threads: int | None) -> tuple[str, Any]:
    """granian serving ``bench/_bare_wsgi.py`` as ``devicetrust serve-ingest`` serves the app
    (same interface, workers and threads): the HTTP floor. Returns (url, process)."""
    import subprocess

    from tests.procs import free_port, wait_http

    port = free_port()
    log = (tmp / "bare.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
        + ["--blocking-threads", str(threads or min(8, 2 * (os.cpu_count() or 1) + 1))]
        + ["_bare_wsgi:app"],
        cwd=Path(__file__).resolve().parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", proc=None)
    except Exception:
        _stop(proc)
        raise
    return url, proc


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except Exception:  # noqa: BLE001 - it would not stop: end it
        proc.kill()
        proc.wait(10)


# ---- in-process breakdown of one report's service time ---------------------------------------


def _per_call(fn: Any, n: int) -> float:
    """CPU milliseconds per call of ``fn`` (median of 3 batches of ``n``)."""
    fn()
    samples = []
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            fn()
        samples.append((time.process_time() - start) / n * 1000)
    return sorted(samples)[1]


# A device's platform in the in-process figures (the HTTP run uses each device's own).
PLATFORM = {"hardware_uuid": "x" * 36, "serial": "S" * 10, "os": "linux", "instance": "0" * 16}


def unchanged_args(
    keys: Any, doc: dict[str, Any], *, counter: int = 7, platform: dict[str, str] | None = None
) -> dict[str, Any]:
    """``report_v2.make_report``'s arguments but ``clock`` for an unchanged report of ``doc``:
    the acknowledged document is the document itself (split and digested here, once)."""
    from trust_protocol import report_v2

    document, volatile = report_v2.split_volatile(doc)
    return {
        "device_id": keys.device_id,
        "counter": counter,
        "agent_version": "0.1.0",
        "platform": PLATFORM if platform is None else platform,
        "document": document,
        "volatile": volatile,
        "acked": document,
        "acked_digest": report_v2.document_digest(document),
    }


def crypto_ceiling(doc: dict[str, Any], n: int) -> tuple[float, int]:
    """The two-core crypto ceiling of a report: box open + one signature check, per core, x 2.

    Measured here, on an unchanged v2 report of ``doc`` (the crypto of a report does not
    depend on the document: the box and the signature cover a few hundred bytes). Returns
    (reports/s, the report's bytes).
    """
    from nacl.bindings import crypto_box_beforenm, crypto_box_open_afternm
    from nacl.public import PrivateKey

    from trust_protocol import DeviceKeys, report_v2
    from trust_protocol.encoding import b64d, loads

    keys = DeviceKeys.generate(str(uuid.uuid4()))
    server = PrivateKey.generate()
    body = report_v2.make_report(clock=time.time(), **unchanged_args(keys, doc))
    sealed = report_v2.seal_report(body, keys.signing_key, bytes(server.public_key))
    env = loads(sealed, max_size=report_v2.MAX_SMALL)
    epk, box = b64d(env["epk"], length=32), b64d(env["box"])
    secret = bytes(server)
    verify = keys.signing_key.verify_key

    def one() -> None:
        plain = crypto_box_open_afternm(box[24:], box[:24], crypto_box_beforenm(epk, secret))
        verify.verify(report_v2.REPORT_CONTEXT + plain[64:], plain[:64])

    ms = _per_call(one, max(n, 50) * 5)
    return 2 * 1000.0 / ms, len(sealed)


def report_floors(doc: dict[str, Any], n: int) -> dict[str, float]:
    """CPU ms of the work the v2 design itself asks of an unchanged report, one core.

    The agent's (digest the document, sign and seal, check the acknowledgement) and the
    service's acknowledgement signature; the service's box open and signature check are
    the crypto ceiling's unit, measured by :func:`crypto_ceiling`.
    """
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    from trust_protocol import DeviceKeys, report_v2

    keys = DeviceKeys.generate(str(uuid.uuid4()))
    server_sign = SigningKey.generate()
    box = bytes(PrivateKey.generate().public_key)
    args = unchanged_args(keys, doc)

    def make() -> Any:
        return report_v2.make_report(clock=time.time(), **args)

    body = make()
    ack = report_v2.Ack(keys.device_id, 7, body.digest, 300, {}, int(time.time()))
    answer = json.loads(json.dumps(report_v2.sign_ack(ack, server_sign)))
    reps = max(n, 50) * 2
    return {
        "agent_digest": _per_call(make, reps),
        "agent_seal": _per_call(lambda: report_v2.seal_report(body, keys.signing_key, box), reps),
        "agent_ack": _per_call(lambda: report_v2.open_ack(answer, server_sign.verify_key), reps),
        "service_ack": _per_call(lambda: report_v2.sign_ack(ack, server_sign), reps),
    }


def breakdown(pg_url: str, docs: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Service CPU per report, step by step, in this process on PostgreSQL (no HTTP)."""
    from nacl.bindings import crypto_box_beforenm, crypto_box_open_afternm
    from nacl.signing import VerifyKey
    from sqlalchemy.engine import make_url

    from idp_service.app import create_app
    from idp_service.devices import enroll, report
    from idp_service.directory import users
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade
    from posture_checks.evaluator import evaluate_all, prepare_facts
    from posture_checks.incremental import FactDigests
    from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response
    from trust_protocol.encoding import b64d, loads
    from trust_protocol.response import RESPONSE_CONTEXT

    upgrade(pg_url)
    tmp = tempfile.mkdtemp()
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": pg_url,
            "DEVICETRUST_DATA_DIR": tmp,
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            "DEVICETRUST_BUILTIN_CHECKS": "all",
            "DEVICETRUST_RATELIMIT_ENABLED": "false",  # one address, bench rates
        }
    )
    app = create_app(settings)
    service = app.extensions["devicetrust"]
    client = app.test_client()
    doc = copy.deepcopy(docs[0])  # this machine's own facts, personalised
    fleet = []
    for k in range(8):
        with service.db.session() as s:
            user = users.create(s, f"inproc{k}-{uuid.uuid4().hex[:6]}@example.com")
            code, _ = enroll.create_code(s, user, ttl_seconds=600)
        keys = DeviceKeys.generate(str(uuid.uuid4()))
        token = client.post("/agent/v1/challenges", json={"purpose": "register"}).json["challenge"]
        body = ResponseBody(
            token, keys.public_json(), {}, "0.1.0", time.time(), {"enrollment_code": code}
        )
        sealed = seal_response(body, parse_challenge(token, service.keys.verify_key), keys)
        assert client.post("/agent/v1/register", data=sealed).status_code == 201
        fleet.append(keys)
    rng = random.Random(7)

    def envelope(keys: Any, facts: dict[str, Any]) -> bytes:
        token, _ = report.issue_challenge(service, keys.device_id)
        challenge = parse_challenge(token, service.keys.verify_key)
        body = ResponseBody(token, keys.public_json(), {}, "0.1.0", time.time(), {"facts": facts})
        return seal_response(body, challenge, keys)

    out: dict[str, float] = {}
    out["issue challenge"] = _per_call(lambda: report.issue_challenge(service, "dev"), n)
    sample = envelope(fleet[0], doc)
    out["envelope bytes"] = len(sample)
    env = loads(sample, max_size=report.MAX_REPORT)
    cid = b64d(env["cid"])
    epk = b64d(env["epk"], length=32)
    sealed_box = b64d(env["box"])
    secret = bytes(service.keys.challenge_box_secret(cid))
    plain = crypto_box_open_afternm(
        sealed_box[24:], sealed_box[:24], crypto_box_beforenm(epk, secret)
    )
    body_bytes = plain[64:]
    parsed = loads(body_bytes, max_size=report.MAX_REPORT)
    device_key = VerifyKey(b64d(parsed["device"]["sign_key"], length=32))
    out["envelope JSON + base64"] = _per_call(
        lambda: [
            b64d(v)
            for v in loads(sample, max_size=report.MAX_REPORT).values()
            if isinstance(v, str)
        ],
        n,
    )
    out["box key derivation (HKDF)"] = _per_call(lambda: service.keys.challenge_box_secret(cid), n)
    out["box open (X25519 + XSalsa20-Poly1305)"] = _per_call(
        lambda: crypto_box_open_afternm(
            sealed_box[24:], sealed_box[:24], crypto_box_beforenm(epk, secret)
        ),
        n,
    )
    out["body JSON parse (strict)"] = _per_call(
        lambda: loads(body_bytes, max_size=report.MAX_REPORT), n
    )
    out["challenge signature verify"] = _per_call(
        lambda: parse_challenge(parsed["challenge"], service.keys.verify_key), n
    )
    out["device signature verify"] = _per_call(
        lambda: device_key.verify(RESPONSE_CONTEXT + body_bytes, plain[:64]), n
    )
    now = dt.datetime.now(dt.UTC)
    checks = service.posture.checks()
    out["evaluate catalog (17 checks, full)"] = _per_call(
        lambda: evaluate_all(checks, doc, now=now, observed_at=now), n
    )
    out["prepare facts (clean copy)"] = _per_call(lambda: prepare_facts(doc, now), n)
    out["serialize facts JSON (to store a changed document)"] = _per_call(
        lambda: json.dumps(doc), n
    )
    out["content digest (marshal + BLAKE2b)"] = _per_call(lambda: FactDigests(doc).content(), n)

    # The whole ingest, as the service runs it, unchanged facts and changed facts alike.
    backends = _pg_backends(make_url(pg_url).database)

    own = [copy.deepcopy(doc) for _ in fleet]  # each device its own document

    def ingest_round(change: float) -> tuple[float, float]:
        envs = []
        for i in range(n):
            k = i % len(fleet)
            facts = own[k]
            facts["collected_at"] = _now_z()
            facts["uptime_seconds"] = 1000 + i
            if rng.random() < change:
                apply_change(facts, rng)
            envs.append(envelope(fleet[k], facts))
        pg = _pg_backends(make_url(pg_url).database) or backends
        pg0 = _cpu(pg)
        start = time.process_time()
        for e in envs:
            report.ingest(service, e)
        cpu = (time.process_time() - start) / n * 1000
        return cpu, (_cpu(pg) - pg0) / n * 1000

    ingest_round(0.0)  # warm: every device has results
    (
        out["ingest, unchanged facts (service CPU)"],
        out["ingest, unchanged facts (PostgreSQL CPU)"],
    ) = ingest_round(0.0)
    for step, ms in _ingest_steps(report, service, lambda: ingest_round(0.0), n).items():
        out[f"  of which {step}"] = ms
    (
        out["ingest, every report changed (service CPU)"],
        out["ingest, every report changed (PostgreSQL CPU)"],
    ) = ingest_round(1.0)
    out["ingest, 2% changed (service CPU)"], out["ingest, 2% changed (PostgreSQL CPU)"] = (
        ingest_round(0.02)
    )
    # The two HTTP requests through Flask's test client (WSGI, no sockets): adds Flask's share.
    keys = fleet[0]

    def via_flask() -> None:
        r = client.post("/agent/v1/report/challenge", json={"device_id": keys.device_id})
        token = r.json["challenge"]
        body = ResponseBody(token, keys.public_json(), {}, "0.1.0", time.time(), {"facts": doc})
        sealed = seal_response(body, parse_challenge(token, service.keys.verify_key), keys)
        assert client.post("/agent/v1/report", data=sealed).status_code == 200

    sample_token, _ = report.issue_challenge(service, keys.device_id)

    def agent_seal() -> None:
        body = ResponseBody(
            sample_token, keys.public_json(), {}, "0.1.0", time.time(), {"facts": doc}
        )
        seal_response(body, parse_challenge(sample_token, service.keys.verify_key), keys)

    # Report v2, in-process: an unchanged report through the service's ingest (box open,
    # signature, the one conditional UPDATE, the signed acknowledgement), and the agent side.
    from idp_service.devices import report_v2 as ingest_v2
    from trust_protocol import report_v2
    from trust_protocol.report_keys import report_box_public

    report_box = report_box_public(service.keys.box_secret)
    document, volatile = report_v2.split_volatile(doc)
    digest = report_v2.document_digest(document)
    counters = dict.fromkeys((k.device_id for k in fleet), 0)

    def v2_envelope(keys: Any, full: bool = False) -> bytes:
        counters[keys.device_id] += 1
        body = report_v2.make_report(
            device_id=keys.device_id,
            counter=counters[keys.device_id],
            clock=time.time(),
            agent_version="0.1.0",
            platform={"instance": "0123456789abcdef"},
            document=document,
            volatile=volatile,
            acked=None if full else document,
            acked_digest=None if full else digest,
        )
        return report_v2.seal_report(body, keys.signing_key, report_box)

    for k in fleet:
        ingest_v2.ingest(service, v2_envelope(k, full=True), full_endpoint=True)
    envs2 = [v2_envelope(fleet[i % len(fleet)]) for i in range(n * 4 + 1)]
    it = iter(envs2)
    out["v2 agent side: digest the document, sign and box an unchanged report"] = _per_call(
        lambda: v2_envelope(fleet[0]), n
    )
    out["v2 unchanged report: ingest (box, signature, one UPDATE, signed ack)"] = _per_call(
        lambda: ingest_v2.ingest(service, next(it), full_endpoint=False), n
    )
    agent_side = _per_call(agent_seal, n)
    out["agent side: verify challenge + seal report (load generator)"] = agent_side
    out["both requests via Flask test client, incl. agent side"] = _per_call(
        via_flask, max(n // 2, 10)
    )
    service.db.dispose()
    return out


def _ingest_steps(report: Any, service: Any, run: Any, n: int) -> dict[str, float]:
    """CPU ms per report of the steps inside ``report.ingest`` (timers around each)."""
    from sqlalchemy.orm import Session

    spent: dict[str, float] = {}
    originals = []

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - start

        setattr(owner, name, timed)

    wrap(report.challenges, "open_answer", "open_answer: JSON, base64, box, 2 signatures")
    wrap(report.challenges, "consume", "challenges.consume (single-use INSERT, ORM)")
    wrap(report.FactDigests, "content", "content digest (marshal + BLAKE2b)")
    wrap(report, "_evaluate", "posture: combined key (+ evaluation when changed)")
    wrap(Session, "commit", "COMMIT")
    try:
        total = run()[0] * n / 1000  # the CPU of the ingest calls alone (not the agent side)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    out = {k: v / n * 1000 for k, v in spent.items()}
    out["the rest: session, 3 Core statements, bookkeeping"] = (
        (total - sum(spent.values())) / n * 1000
    )
    out["(total with the timers)"] = total / n * 1000
    return out


# ---- scratch database ---------------------------------------------------------------------------


def _scratch_pg(base_url: str) -> tuple[str, Any]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"devicetrust_ingest_{uuid.uuid4().hex[:8]}"
    admin = dict(host=base.host, port=base.port or 5432, user=base.username, dbname=base.database)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    return base.set(database=name).render_as_string(hide_password=False), drop


def fleet_documents(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` device documents spread over the templates (Linux-heavy like the real one)."""
    rng = random.Random(seed)
    bases = templates()
    linux_packages = dict(bases[0]["packages"]["installed"])
    weights = [6 if (b.get("os") or {}).get("family") == "linux" else 3 for b in bases]
    weights[0] = 12  # this machine's own, real document
    return [
        make_document(rng.choices(bases, weights)[0], i, rng, linux_packages) for i in range(count)
    ]


def print_floor(floors: dict[str, float], figures: dict[str, Any], ceiling: float) -> None:
    """The floor of one unchanged v2 report and the highest ratio it leaves possible."""
    bare, v2 = figures["bare"], figures["report2"]
    rows = [
        ("agent: digest its document, as it does each report", floors["agent_digest"]),
        ("agent: sign and seal the report", floors["agent_seal"]),
        ("agent: check the acknowledgement's signature", floors["agent_ack"]),
        ("service: box open + signature check (ceiling unit)", 2000.0 / ceiling),
        ("service: sign the acknowledgement", floors["service_ack"]),
        (
            "HTTP: one exchange, do-nothing app on granian",
            bare["cpu_service_ms"] + bare["cpu_loadgen_ms"],
        ),
        ("PostgreSQL, per v2 report above (its deltas too)", v2["cpu_pg_ms"]),
    ]
    total = sum(ms for _, ms in rows)
    print(
        "  the floor of one unchanged v2 report: the work the design itself asks, measured"
        " in this run (CPU ms; everything else free):"
    )
    for label, ms in rows:
        print(f"    {label:52s} {ms:6.3f}")
    without_digest = total - floors["agent_digest"]
    crypto_http = without_digest - v2["cpu_pg_ms"]
    print(f"    {'sum':52s} {total:6.3f} -> at most {2000 / total:,.0f} reports/s on two cores")
    print(
        f"  ratio bound from the floor: {2000 / total / ceiling * 100:.0f} % of the crypto"
        f" ceiling (without the agent's digest: {2000 / without_digest / ceiling * 100:.0f} %;"
        f" crypto and HTTP alone: {2000 / crypto_http / ceiling * 100:.0f} %);"
        f" reached: {v2['rate'] / (2000 / total) * 100:.0f} % of the floor's bound"
    )


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2000, help="simulated devices")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before")
    parser.add_argument("--clients", type=int, default=6, help="load-generator processes")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (of the ingest tier, or gunicorn)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per ingest-tier worker (default: the tier's own, 2 x cores + 1, at most 8)",
    )
    parser.add_argument(
        "--tier",
        choices=("ingest", "serve"),
        default="ingest",
        help="where v2 reports go: the ingest tier (devicetrust serve-ingest, beside the "
        "service) or the service itself (devicetrust serve, gunicorn)",
    )
    parser.add_argument(
        "--floor-seconds",
        type=float,
        default=5.0,
        help="seconds of challenge-only and /healthz load after the reports (0: skip)",
    )
    parser.add_argument("--change-rate", type=float, default=0.02, help="reports with a change")
    parser.add_argument("--n", type=int, default=200, help="iterations per in-process figure")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create a scratch database on",
    )
    parser.add_argument(
        "--protocols",
        default="v1,v2",
        help="report versions to run over HTTP, back to back: v1, v2 or v1,v2 (v2 runs first)",
    )
    parser.add_argument("--skip-http", action="store_true", help="only the in-process figures")
    parser.add_argument("--skip-breakdown", action="store_true", help="only the HTTP figures")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few iterations of every code path (make test runs this); figures mean nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.seconds, args.warmup, args.floor_seconds = 12, 0.5, 0.2, 0.3
        args.clients, args.workers, args.n = 1, 1, 4

    docs = fleet_documents(max(args.devices, 1))
    sizes = sorted(len(json.dumps(d)) for d in docs)
    print(
        f"fleet: {len(docs)} devices; fact documents {sizes[0] / 1024:.0f}-{sizes[-1] / 1024:.0f}"
        f" KiB (median {sizes[len(sizes) // 2] / 1024:.0f} KiB); change rate {args.change_rate:.0%}"
    )
    args.protocols = {p.strip() for p in args.protocols.split(",") if p.strip()}
    if not args.protocols <= {"v1", "v2"} or not args.protocols:
        parser.error("--protocols: v1, v2 or v1,v2")
    ceiling_before, report_bytes = crypto_ceiling(docs[0], args.n)
    floors = report_floors(docs[0], args.n)
    if not args.skip_http:
        url, drop = _scratch_pg(args.pg_url)
        try:
            figures = http_ingest(url, args, docs)
        finally:
            drop()
        ceiling_after, _ = crypto_ceiling(docs[0], args.n)
        ceiling = (ceiling_before + ceiling_after) / 2
        print(
            f"\ncrypto ceiling of a report (box open + one signature check, per core x 2; "
            f"measured before and after the HTTP run): {ceiling_before:,.0f} / "
            f"{ceiling_after:,.0f} reports/s; an unchanged v2 report is {report_bytes} bytes"
        )
        where = (
            f"v2 to the ingest tier ({args.workers} granian workers) beside the service"
            if args.tier == "ingest"
            else f"gunicorn {args.workers} gthread workers"
        )
        print(
            f"\nreports over HTTP ({where}, PostgreSQL, "
            f"{args.clients} agent processes, keep-alive):"
        )
        for mode, label in (("report2", "v2 (one request)"), ("report", "v1 (two requests)")):
            if mode not in figures:
                continue
            r = figures[mode]
            print(
                f"  {label}: {r['rate']:,.0f} reports/s   ({r['done']} reports, "
                f"{r['failed']} failed, {r['changes']} with a change; "
                f"{figures['registered']} devices enrolled by ceremony); "
                f"{r['rate'] / ceiling:.1%} of the crypto ceiling, "
                f"{r['rate'] / TARGET:.0%} of 2,000/s"
            )
        print("  bytes on the wire per report (request + answer bodies; HTTP headers add ~250):")
        for mode in ("report2", "report"):
            for kind, (count, nbytes) in sorted(figures.get(mode, {}).get("wire", {}).items()):
                print(f"    {kind:14s} {nbytes / max(count, 1):>10,.0f} bytes   ({count} reports)")
            if mode in figures and figures[mode]["done"]:
                total = sum(b for _, b in figures[mode]["wire"].values())
                print(f"    {'mean, ' + mode:14s} {total / figures[mode]['done']:>10,.0f} bytes")
        labels = {
            "report2": "report v2 (one request)",
            "report": "report v1 (both requests)",
            "challenge": "challenge request alone",
            "healthz": "GET /healthz (HTTP floor)",
            "bare": "POST, do-nothing app",
        }
        modes = [m for m in labels if m in figures]
        print("  CPU ms per operation:        " + "".join(f"{labels[m]:>28s}" for m in modes))
        for key, label in (
            ("rate", "operations/s"),
            ("cpu_service_ms", "service processes"),
            ("cpu_pg_ms", "PostgreSQL backends"),
            ("cpu_pg_shared_ms", "PostgreSQL background"),
            ("cpu_loadgen_ms", "load generator (agents)"),
            ("cpu_machine_ms", "whole machine"),
            ("machine_cores_busy", "cores busy"),
        ):
            fmt = "{:>28,.0f}" if key == "rate" else "{:>28.2f}"
            print(f"    {label:27s}" + "".join(fmt.format(figures[m][key]) for m in modes))
        for m in modes:
            (a0, b0, c0), (a1, b1, c1) = figures[m]["load"]
            print(f"  load average, {m}: {a0:.2f} {b0:.2f} {c0:.2f} -> {a1:.2f} {b1:.2f} {c1:.2f}")
        for mode in ("report2", "report"):
            if mode not in figures:
                continue
            r = figures[mode]
            service_only = r["cpu_service_ms"] + r["cpu_pg_ms"] + r["cpu_pg_shared_ms"]
            print(
                f"  {mode}: service + PostgreSQL alone: {service_only:.2f} ms per report -> "
                f"{2000 / max(service_only, 1e-9):,.0f} reports/s if they had both cores"
            )
        if "report2" in figures and "bare" in figures:
            print_floor(floors, figures, ceiling)
        headline = figures.get("report2") or figures.get("report")
        print(f"ratio reports / crypto ceiling: {headline['rate'] / ceiling * 100:.0f} %")
    if not args.skip_breakdown:
        url, drop = _scratch_pg(args.pg_url)
        try:
            b = breakdown(url, docs, args.n)
        finally:
            drop()
        print("\nin-process, one core, CPU ms per report (this machine's facts):")
        for k, v in b.items():
            print(f"  {k:58s} {v:8.3f}" if k != "envelope bytes" else f"  {k:58s} {v:8.0f}")


if __name__ == "__main__":
    main()
