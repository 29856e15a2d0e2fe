"""Fixtures of the OpenID Connect tests: the in-process provider and a test Entra tenant."""

from __future__ import annotations

import pytest

from tests.oidc.support import IDP_PUBLIC, Tenant


@pytest.fixture
def idp(sqlite_url, tmp_path):
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": sqlite_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": IDP_PUBLIC,
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()


@pytest.fixture(scope="session")
def tenant():
    t = Tenant()
    yield t
    t.close()
