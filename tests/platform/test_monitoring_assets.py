"""The Grafana dashboard and the Prometheus alert rules in packaging/monitoring/: valid
(JSON; `promtool check rules` from Debian's prometheus package, else a structural check)
and naming only metrics the service's /metrics really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from idp_service.platform import metrics
from idp_service.platform.config import Settings

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "packaging" / "monitoring"
METRIC = re.compile(r"\b(devicetrust_[a-z0-9_]+)\b")
TOKEN = "t" * 40


def _exposed(tmp_path: Path, sqlite_url: str) -> set[str]:
    """Every sample name /metrics shows once each metric has a value."""
    from idp_service.app import create_app

    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": sqlite_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path),
                "DEVICETRUST_METRICS_TOKEN": TOKEN,
            }
        )
    )
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    metrics.signin("denied", "device_pending")
    metrics.signin_duration("saml", 1.5)
    with metrics.verifying():
        pass
    metrics.report_ingested()
    metrics.check_results(["PASS"])
    metrics.scim_request("create", 201)
    metrics.webhook_delivery("delivered")
    metrics.job_succeeded("stale-sweep")
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    names = set()
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _rules() -> dict:
    return yaml.safe_load((MONITORING / "alerts.yml").read_text())


def _expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in _rules()["groups"] for r in g["rules"]]
    return exprs


def test_every_metric_the_dashboard_and_alerts_name_is_exposed(tmp_path, sqlite_url):
    exposed = _exposed(tmp_path, sqlite_url)
    named = {m for expr in _expressions() for m in METRIC.findall(expr)}
    assert named, "no metric found in the dashboard or the rules"
    missing = named - exposed
    assert not missing, f"named but not exposed: {sorted(missing)}"
    # ...and every family the service exposes is on the dashboard.
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", m) for m in named}
    assert set(metrics.FAMILIES) <= shown, set(metrics.FAMILIES) - shown


def test_the_dashboard_is_grafana_json():
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] == "timeseries" and panel["targets"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_the_alert_rules_are_valid():
    rules = _rules()
    names = []
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["alert"] and rule["expr"].strip() and rule["annotations"]["summary"]
            assert rule["labels"]["severity"] in ("page", "warn")
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian: prometheus) is not installed; structure checked only")
    checked = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(names)} rules found" in checked.stdout
