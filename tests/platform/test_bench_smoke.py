"""Every bench in bench/ still runs: ``--smoke`` exercises all its code paths in seconds.

The full runs (``make bench``, ``python bench/NAME.py``) stay outside the test
suite; their figures need a quiet machine. A smoke run proves the code they
wrap has not moved under them (the ingest breakdown once crashed after its
HTTP figures because a wrapped function had moved). Also here: the ingest
bench's simulated fleet is realistic (varied devices, changes that count).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from bench.ingest import apply_change, fleet_documents
from posture_checks.incremental import FactDigests
from tests.procs import ROOT, base_env

# Lines each bench must print: one per figure group, breakdowns included.
FIGURES = {
    "admin_console": [r"admin console, 300 devices", r"overview +[\d.]+ ms", r"audit by device"],
    "agent": [
        r"idle RSS, real",
        r"CPU per full collection \(median of 1\)",
        r"of which the agent",
        r"size on disk, built agent: +[\d.]+ MB",
        r"cold start `--version` .*built/venv [\d.]+",
        r"idle RSS, `run`: built +[\d.]+ MB, venv +[\d.]+ MB",
    ],
    "checks": [r"catalog: \d+ checks", r"all checks: +[\d.]+ ms", r"without the package checks"],
    "ingest": [
        r"[\d,]+ reports/s",
        r"GET /healthz",
        r"HTTP: one exchange, do-nothing app on granian +[\d.]+",
        r"ratio bound from the floor: \d+ %",
        r"of which open_answer",
        r"of which COMMIT",
        r"both requests via Flask test client",
    ],
    "login": [
        r"full logins over HTTP .*: [\d,]+/s",
        r"crypto ceiling of one login",
        r"issuance, pysaml2 create_authn_response",
        r"signing ceiling, P-256",
    ],
    "login_steps": [r"^sso +[\d.]+", r"^continue +[\d.]+", r"^service +[\d.]+"],
    "replicas": [
        r"single process, no balancer: [\d,]+ logins/s",
        r"^ +1 +[\d,]+ +\d+% ",
        r"^ +2 +[\d,]+ +\d+% ",
        r"idle replica: [\d.]+% of a core",
        r"balancer overhead per login",
    ],
    "oidc": [
        r"id_token issuance, the provider's path: +[\d,]+/s",
        r"RS256 signing ceiling, cryptography alone: +[\d,]+/s",
        r"ratio issuance / signing ceiling",
        r"full OIDC sign-ins over HTTP .*: [\d,.]+/s",
    ],
    "scim_import": [r"^import +\d+ users/s", r"^lookup +\d+ users/s", r"CPU per request"],
    "verify": [
        r"crypto ceiling",
        r"service verify path, SQLite, 2 threads",
        r"service verify path, PostgreSQL, 1 answer at a time .*one durable commit",
    ],
    "webhook_latency": [r"webhook commit-to-delivery, poll [\d.]+ s, \d+ events: median \d+ ms"],
}


def test_every_bench_has_a_smoke_run():
    # A module whose name starts with "_" is a bench's helper (e.g. _bare_wsgi.py), not a bench.
    benches = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert benches == set(FIGURES), "add the new bench to FIGURES (and give it --smoke)"


@pytest.mark.parametrize("bench", sorted(FIGURES))
def test_bench_smoke(bench):
    done = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--smoke"],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for pattern in FIGURES[bench]:
        assert re.search(pattern, done.stdout, re.M), f"{pattern!r} missing:\n{done.stdout}"


def test_fleet_devices_differ_and_have_realistic_package_maps():
    docs = fleet_documents(24, seed=3)
    families = {d["os"]["family"] for d in docs}
    assert "linux" in families and len(families) >= 2
    assert len({d["hardware"]["serial"] for d in docs}) == len(docs)
    assert len({FactDigests(d).content() for d in docs}) == len(docs)
    for doc in docs:
        count = doc["packages"]["count"]
        assert count == len(doc["packages"]["installed"])
        low = 700 if doc["os"]["family"] == "linux" else 100
        assert low <= count <= 1500


def test_every_simulated_change_is_a_real_change():
    rng = random.Random(5)
    doc = fleet_documents(1, seed=4)[0]
    for _ in range(40):
        before = FactDigests(doc).content()
        kind = apply_change(doc, rng)
        assert FactDigests(doc).content() != before, kind
