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


@pytest.fixture(scope="module")
def idp_app(tmp_path_factory):
    """One provider for a module's refusal and property tests (they write audit events and
    clients of their own, nothing another case reads)."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    tmp = tmp_path_factory.mktemp("oidc-props")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    upgrade(url)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": url,
                "DEVICETRUST_DATA_DIR": str(tmp / "data"),
                "DEVICETRUST_PUBLIC_URL": IDP_PUBLIC,
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()
