"""schemathesis against the live service with the API's own OpenAPI document.

The service runs as a real process; a write token lets every action run. The
run must end with 0 server errors and 0 schema violations (status codes,
content types, headers and bodies as documented, auth enforced). Seeded rows
keep state-changing cases meaningful; each outcome a destructive case can lead
to (404 after a delete, 409 after a state change) is documented, so the order
of cases cannot make the run flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from idp_service.platform.db import Database
from idp_service.saml import api as saml_api
from idp_service.webhooks import endpoints as webhook_endpoints
from tests.api_helpers import make_token, seed
from tests.procs import start_service
from tests.saml_support import sp_metadata

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
    ]
)


def test_schemathesis_finds_no_server_error_or_schema_violation(database_url, tmp_path, artifacts):
    svc = start_service(tmp_path, database_url)
    try:
        db = Database(database_url)
        try:
            data = seed(db, devices_per_state=4)
            token = make_token(db, "schemathesis", "write")
            xml = sp_metadata("https://sp.example.com/meta", ["https://sp.example.com/acs"])
            sp = saml_api.create_sp(db, {"metadata_xml": xml.decode(), "name": "seeded"})
            with db.session() as s:
                # Deliveries to a closed loopback port fail harmlessly in the background.
                hook, _ = webhook_endpoints.create(s, "http://127.0.0.1:9/hook", actor="test")
                delivery = webhook_endpoints.send_test(s, hook.id, actor="test")
                hooks = {"webhook_id": [hook.id], "delivery_id": [delivery.id]}
        finally:
            db.dispose()
        ids = {
            "device_id": [d for ds in data["devices"].values() for d in ds],
            "user_id": [data["alice"], data["bob"]],
            "group_id": [data["group"]],
            "group": [data["group"], "Admins"],  # registration policies, by id or displayName
            "sp": [sp["id"], "seeded"],
            **hooks,
        }
        report = artifacts / f"schemathesis-{Path(database_url).name.split('?')[0]}"
        env = {
            **svc.env,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "DEVICETRUST_TEST_API_IDS": json.dumps(ids),
        }
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"{svc.url}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "12",
                "--seed",
                "20260601",
                # One worker: hypothesis's lambda-source parsing is not thread-safe on 3.11.
                "--workers",
                "1",
                "--suppress-health-check",
                "all",
                "--report",
                "junit",
                "--report-dir",
                str(report),
                "--output-sanitize",
                "true",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        (report.parent / f"{report.name}.log").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
        assert "unhandled error" not in svc.log()
    finally:
        svc.stop()
