"""``devicetrust api-token``: create, list and revoke, with only hashes stored."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import select

from idp_service.platform.db import Database
from idp_service.token_tables import ApiToken
from tests.procs import ROOT, base_env


def _cli(url: str, tmp_path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = base_env(DEVICETRUST_DATABASE_URL=url, DEVICETRUST_DATA_DIR=str(tmp_path / "d"))
    return subprocess.run(
        [sys.executable, "-m", "idp_service", "api-token", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def test_api_token_create_list_revoke(migrated_url, tmp_path):
    made = json.loads(
        _cli(migrated_url, tmp_path, "create", "ci", "--scope", "write", "--json").stdout
    )
    assert made["name"] == "ci" and made["scope"] == "write" and made["token"].startswith("dtapi_")
    assert _cli(migrated_url, tmp_path, "create", "ci", check=False).returncode != 0
    assert _cli(migrated_url, tmp_path, "create", "bad name", check=False).returncode != 0
    listed = json.loads(_cli(migrated_url, tmp_path, "list", "--json").stdout)
    assert listed == [
        {
            "name": "ci",
            "scope": "write",
            "state": "active",
            "created_at": listed[0]["created_at"],
            "revoked_at": None,
            "last_used_at": None,
        }
    ]
    assert made["token"] not in _cli(migrated_url, tmp_path, "list").stdout
    db = Database(migrated_url)
    try:
        with db.session() as s:
            row = s.scalars(select(ApiToken)).one()
            assert made["token"] not in (row.token_hash or "")
            assert len(row.token_hash) == 64
    finally:
        db.dispose()
    _cli(migrated_url, tmp_path, "revoke", "ci")
    assert (
        json.loads(_cli(migrated_url, tmp_path, "list", "--json").stdout)[0]["state"] == "revoked"
    )
    assert _cli(migrated_url, tmp_path, "revoke", "ci", check=False).returncode != 0
