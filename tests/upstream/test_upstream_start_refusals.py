"""Every refusal of ``/upstream/<idp>/start`` writes its ``upstream.signin`` audit event, once.

A start for a login transaction this browser does not hold, for an unknown IdP or purpose,
or while the provider cannot be reached: each answers its stable
code and leaves exactly one ``rejected`` event, and no authorization request. In process
(Flask's test client); the provider is a loopback port where nothing listens.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.procs import free_port
from tests.saml_support import FlaskClient


@pytest.fixture
def app(database_url, tmp_path):
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(database_url)
    idps = tmp_path / "upstream.toml"
    idps.write_text(
        "[[idp]]\n"
        'id = "corp"\nname = "Corp"\n'
        f'issuer = "http://127.0.0.1:{free_port()}"\n'
        'client_id = "c"\nclient_secret = "s"\nclaim = "email"\ntimeout = 2\n'
    )
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": database_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                "DEVICETRUST_UPSTREAM_IDPS": str(idps),
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()


def _events(app) -> list[tuple[str, str | None, dict]]:
    from idp_service.platform.models import AuditEvent

    with app.extensions["devicetrust"].db.session() as s:
        rows = s.execute(
            select(AuditEvent.outcome, AuditEvent.code, AuditEvent.details)
            .where(AuditEvent.action == "upstream.signin")
            .order_by(AuditEvent.id)
        ).all()
    return [(o, c, d or {}) for o, c, d in rows]


def _requests(app) -> int:
    from idp_service.upstream.tables import UpstreamLogin

    with app.extensions["devicetrust"].db.session() as s:
        return int(s.scalar(select(func.count()).select_from(UpstreamLogin)) or 0)


def _txn(client: FlaskClient) -> str:
    r = client.get("/login", follow_redirects=False)
    assert r.status_code == 303
    return r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_each_start_refusal_is_audited_once(app):
    browser = FlaskClient(app)
    txn = _txn(browser)
    cases = [
        (FlaskClient(app), f"/upstream/corp/start?txn={txn}", 403, "upstream_state_invalid"),
        (browser, f"/upstream/nope/start?txn={txn}", 404, "upstream_unknown_idp"),
        (browser, f"/upstream/corp/start?txn={txn}&purpose=bogus", 400, "malformed"),
        (browser, f"/upstream/corp/start?txn={txn}", 503, "upstream_unavailable"),
    ]
    for client, url, status, code in cases:
        before = len(_events(app))
        r = client.get(url)
        assert r.status_code == status, (url, r.text)
        assert code in r.text
        events = _events(app)[before:]
        assert [(o, c) for o, c, _ in events] == [("rejected", code)], (url, events)
    reasons = [d.get("reason") for _, _, d in _events(app)]
    assert reasons[0] == "txn_not_owned" and reasons[-1] == "unreachable"

    assert _requests(app) == 0
