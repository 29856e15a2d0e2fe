"""The Host header is the client's to choose: the service builds no URL from it and,
by default, answers only to its public URL's host (and loopback). In process, on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from idp_service.app import create_app
from idp_service.platform.config import Settings


def _app(migrated_url, tmp_path, **env):
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "https://idp.example.com",
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
            **env,
        }
    )
    return create_app(settings)


@pytest.fixture
def app(migrated_url, tmp_path):
    app = _app(migrated_url, tmp_path)
    yield app
    app.extensions["devicetrust"].db.dispose()


@pytest.mark.parametrize("path", ["/admin", "/login", "/healthz", "/agent/v1/server"])
def test_an_unknown_host_is_refused_with_a_stable_code(app, path):
    resp = app.test_client().get(path, headers={"Host": "evil.example"})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "host_not_allowed"
    assert "Location" not in resp.headers and "evil" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("host", ["idp.example.com", "127.0.0.1:8000", "localhost"])
def test_redirects_name_the_public_url(app, host):
    resp = app.test_client().get("/admin", headers={"Host": host})
    assert resp.status_code in (301, 308)
    assert resp.headers["Location"] == "https://idp.example.com/admin/"


def test_with_any_host_allowed_redirects_still_name_the_public_url(migrated_url, tmp_path):
    app = _app(migrated_url, tmp_path, DEVICETRUST_TRUSTED_HOSTS="*")
    try:
        client = app.test_client()
        resp = client.get("/admin", headers={"Host": "evil.example"})
        assert resp.status_code in (301, 308)
        assert resp.headers["Location"] == "https://idp.example.com/admin/"
        txn = client.get("/login", headers={"Host": "evil.example"}).headers["Location"]
        page = client.get(txn, headers={"Host": "evil.example"}).get_data(as_text=True)
        assert "devicetrust-agent enroll https://idp.example.com CODE" in page
        assert "evil.example" not in page
    finally:
        app.extensions["devicetrust"].db.dispose()


def test_listed_hosts_and_subdomains_are_answered(migrated_url, tmp_path):
    app = _app(migrated_url, tmp_path, DEVICETRUST_TRUSTED_HOSTS="idp.example.com .corp.example")
    try:
        client = app.test_client()
        assert client.get("/healthz", headers={"Host": "sso.corp.example"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "idp.example.com"}).status_code == 200
        refused = client.get("/healthz", headers={"Host": "localhost"})  # not listed
        assert refused.json["error"]["code"] == "host_not_allowed"
    finally:
        app.extensions["devicetrust"].db.dispose()


@pytest.mark.parametrize("value", ["https://idp.example.com", "idp.example.com:443", "*.x.com"])
def test_the_setting_names_hosts_only(value):
    with pytest.raises(ValueError, match="DEVICETRUST_TRUSTED_HOSTS"):
        Settings.from_env({"DEVICETRUST_TRUSTED_HOSTS": value})
