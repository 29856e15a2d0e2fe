"""``devicetrust oidc-client`` and ``devicetrust oidc-key``: the commands people run, in process."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from idp_service.cli import cli


@pytest.fixture
def run(sqlite_url, tmp_path):
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    env = {"DEVICETRUST_DATABASE_URL": sqlite_url, "DEVICETRUST_DATA_DIR": str(tmp_path / "d")}

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(cli, list(args), env=env)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return invoke


def test_client_commands(run, tmp_path):
    added = json.loads(
        run(
            "oidc-client",
            "add",
            "--client-id",
            "wiki",
            "--name",
            "Wiki",
            "--redirect-uri",
            "https://wiki.example/cb",
            "--json",
        )
    )
    assert added["client_id"] == "wiki" and len(added["client_secret"]) >= 40
    assert "client_secret" not in json.loads(run("oidc-client", "show", "wiki", "--json"))
    assert "Wiki" in run("oidc-client", "list")
    out = run(
        "oidc-client",
        "add",
        "--client-id",
        "wiki",
        "--redirect-uri",
        "https://w.example/cb",
        ok=False,
    )
    assert "client_exists" in out
    out = run("oidc-client", "add", "--redirect-uri", "http://evil.example/cb", ok=False)
    assert "invalid_uri" in out and "use https" in out
    out = run(
        "oidc-client",
        "update",
        "wiki",
        "--claim",
        "groups=roles",
        "--claim",
        "posture=",
        "--disable",
        "--json",
    )
    data = json.loads(out)
    assert data["claims"]["groups"] == "roles" and "posture" not in data["claims"]
    assert data["enabled"] is False and "client_secret" not in data
    rotated = json.loads(run("oidc-client", "update", "wiki", "--rotate-secret", "--json"))
    assert rotated["client_secret"] != added["client_secret"]
    out = run(
        "oidc-client",
        "add",
        "--client-id",
        "entra",
        "--mode",
        "factor",
        "--auth-method",
        "none",
        "--redirect-uri",
        "https://login.microsoftonline.com/common/federation/externalauthprovider",
        "--eam-tenant-id",
        "11111111-2222-3333-4444-555555555555",
        "--eam-jwks-url",
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/discovery/v2.0/keys",
    )
    assert (
        "eam_issuer: https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0"
        in out
    )
    assert "client_secret" not in out
    assert "removed OIDC client wiki" in run("oidc-client", "remove", "wiki")
    assert "client_not_found" in run("oidc-client", "show", "wiki", ok=False)


def test_key_commands(run):
    assert "no staged key" in run("oidc-key", "rotate", "--activate", ok=False)
    staged = json.loads(run("oidc-key", "rotate", "--json"))["key"]
    assert staged["status"] == "next"
    active = json.loads(run("oidc-key", "rotate", "--activate", "--json"))["key"]
    assert active["kid"] == staged["kid"] and active["status"] == "active"
    assert json.loads(run("oidc-key", "rotate", "--retire", "--json")) == {"retired": []}
    listed = json.loads(run("oidc-key", "list", "--json"))
    assert [k["status"] for k in listed] == ["active"]
