"""Cookies are ``__Host-`` on https (no sibling host can plant them), bare on plain http."""

from __future__ import annotations

import pytest

from idp_service.app import create_app
from idp_service.platform.config import Settings


def _app(migrated_url, tmp_path, public_url):
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": public_url,
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
        }
    )
    return create_app(settings)


@pytest.mark.parametrize(
    ("public_url", "prefix", "secure"),
    [("https://idp.example.com", "__Host-", True), ("http://127.0.0.1:8000", "", False)],
)
def test_session_and_holder_cookies(migrated_url, tmp_path, public_url, prefix, secure):
    app = _app(migrated_url, tmp_path, public_url)
    try:
        client = app.test_client()
        started = client.get("/login", base_url=public_url)
        assert started.status_code == 303
        txn = started.headers["Location"].rsplit("/", 1)[-1]
        session_cookie = started.headers["Set-Cookie"]
        assert session_cookie.startswith(f"{prefix}devicetrust_session=")
        assert ("Secure" in session_cookie) is secure and "Domain=" not in session_cookie
        assert "Path=/;" in session_cookie or session_cookie.endswith("Path=/")
        resp = client.post(f"/login/{txn}/challenge", json={}, base_url=public_url)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        holder = [h for h in resp.headers.getlist("Set-Cookie") if "holder" in h]
        assert len(holder) == 1 and holder[0].startswith(f"{prefix}devicetrust_holder=")
        assert ("Secure" in holder[0]) is secure and "HttpOnly" in holder[0]
        assert "Domain=" not in holder[0] and "Path=/" in holder[0]
    finally:
        app.extensions["devicetrust"].db.dispose()
