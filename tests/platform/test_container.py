"""The container image's files: the Containerfile (structure: no image can be built here,
see docs/deploy.md), the entrypoint run for real outside a container (migrate, serve,
both, a refused mode), and the compose file whose settings pass production mode."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from idp_service.platform.config import Settings
from tests.procs import base_env, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "packaging" / "container"
ENTRYPOINT = CONTAINER / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = (CONTAINER / "Containerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_the_containerfile_is_multi_stage_non_root_and_copies_only_what_exists():
    steps = _instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert (
        len(stages) == 2 and stages[0].endswith(" AS build") and stages[1].endswith(" AS runtime")
    )
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] == "10001:10001"  # numeric, so runAsNonRoot can check it
    assert not any(w == "RUN" for w, _ in final[[w for w, _ in final].index("USER") :])
    assert not any(w == "ADD" for w, _ in steps)  # COPY only: nothing fetched at build time
    for word, args in steps:
        if word == "COPY" and "--from=" not in args:
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), source
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists/*" in args
    by = dict(final)
    assert json.loads(by["ENTRYPOINT"]) == ["/usr/local/bin/devicetrust-entrypoint"]
    assert json.loads(by["CMD"]) == ["migrate-and-serve"]
    assert "/readyz" in by["HEALTHCHECK"] and "VOLUME" in by
    assert "COPY --from=build /opt/devicetrust /opt/devicetrust" in [f"{w} {a}" for w, a in final]
    assert os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0


def _bin(tmp_path: Path) -> Path:
    """A `devicetrust` command that runs this checkout (what the image's venv provides)."""
    path = tmp_path / "bin" / "devicetrust"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m idp_service "$@"\n')
    path.chmod(0o755)
    return path


def _env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    return base_env(
        DEVICETRUST_BIN=str(_bin(tmp_path)),
        DEVICETRUST_DATABASE_URL=url,
        DEVICETRUST_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )


def test_the_entrypoint_migrates_serves_or_both(tmp_path, empty_sqlite_url):
    env = _env(tmp_path, empty_sqlite_url)
    refused = subprocess.run(
        ["sh", str(ENTRYPOINT), "sideways"], env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2 and "unknown mode 'sideways'" in refused.stderr

    from idp_service.platform.migrate import is_current

    # migrate alone, then serve alone (what a migration job and the replicas run).
    migrated = subprocess.run(
        ["sh", str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0 and "database is up to date" in migrated.stdout
    assert is_current(empty_sqlite_url)
    port = free_port()
    env["DEVICETRUST_BIND"] = f"127.0.0.1:{port}"
    env["DEVICETRUST_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    env["DEVICETRUST_WORKERS"] = "1"
    served = subprocess.Popen(["sh", str(ENTRYPOINT), "serve"], env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=served)
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(20)
    assert served.returncode == 0  # exec'd: gunicorn got the signal and stopped cleanly

    # The report ingest tier: exec'd as well, serving the same database.
    tier = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "serve-ingest"], env=env, start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=tier)
    finally:
        os.killpg(tier.pid, signal.SIGTERM)
        tier.wait(20)
    assert tier.returncode == 0

    # The default: migrate a fresh database, then serve it.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    env["DEVICETRUST_DATABASE_URL"] = fresh
    both = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120, proc=both)
        assert is_current(fresh)
    finally:
        os.killpg(both.pid, signal.SIGTERM)
        both.wait(20)


def test_compose_has_postgres_a_tls_proxy_and_a_read_only_service_in_production_mode():
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("docker.io/library/postgres:")
    assert services["migrate"]["command"] == ["migrate"]
    app = services["devicetrust"]
    assert app["command"] == ["serve"] and app["read_only"] is True and "/tmp" in app["tmpfs"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "9464" in app["expose"] and "ports" not in app  # metrics never published
    ingest = services["ingest"]
    assert ingest["command"] == ["serve-ingest"] and ingest["read_only"] is True
    assert "ports" not in ingest and "ingest" in services["proxy"]["depends_on"]
    proxy = services["proxy"]
    assert any(p.startswith("443:") for p in proxy["ports"])
    nginx = (CONTAINER / "nginx.conf").read_text()
    assert "ssl_certificate " in nginx and "listen 8443 ssl" in nginx
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in nginx
    assert "X-Forwarded-Proto $scheme" in nginx and "location = /metrics { return 404; }" in nginx
    # Agents' v2 reports go to the ingest tier, with the same forwarded headers.
    report = nginx.split("location = /agent/v2/report {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://devicetrust_ingest;" in report
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in report

    # The example settings pass production mode with one trusted proxy (nginx).
    env = {}
    for line in (CONTAINER / "devicetrust.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    settings = Settings.from_env(env)
    assert settings.env == "production" and settings.trusted_proxies == 1
    assert settings.metrics_listen == "0.0.0.0:9464"
