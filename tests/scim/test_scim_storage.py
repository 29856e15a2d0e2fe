"""scim2-server's storage contract, run on our SQL storage on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from scim2_models import ScimProvider
from scim2_server.testing import ScimStorageContract

from idp_service.platform.db import Database
from scim.provider import build_provider
from scim.storage import SqlStorage


class TestSqlStorageContract(ScimStorageContract):
    """Every rule of :class:`~scim2_server.storage.ScimStorage`, on both databases."""

    @pytest.fixture
    def provider(self) -> ScimProvider:
        return build_provider()

    @pytest.fixture
    def storage(self, migrated_url: str, provider: ScimProvider):
        db = Database(migrated_url)
        yield SqlStorage(db, provider)
        db.dispose()
