"""Helpers for the SCIM tests: a live service with a token, and a small SCIM client."""

from __future__ import annotations

from typing import Any

import httpx

from tests.procs import ServiceProc, start_service

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def start_scim_service(tmp_path, database_url: str, **extra_env: str) -> tuple[ServiceProc, str]:
    """A running service and a fresh token named ``test``."""
    svc = start_service(tmp_path, database_url, extra_env=extra_env or None)
    token = svc.cli_json("scim-token", "create", "test")["token"]
    return svc, token


def scim_client(svc: ServiceProc, token: str | None) -> httpx.Client:
    """An httpx client rooted at ``/scim/v2`` that sends ``token`` as a bearer token."""
    headers = {"Content-Type": SCIM_JSON, "Accept": SCIM_JSON}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=f"{svc.url}/scim/v2", headers=headers, timeout=30)


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    """A PatchOp body."""
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def user_body(user_name: str, **extra: Any) -> dict[str, Any]:
    """A minimal User creation body."""
    return {"schemas": [USER], "userName": user_name, **extra}


def assert_scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> None:
    """``response`` is a SCIM error with ``status`` (and ``scimType``)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["schemas"] == [ERROR]
    assert str(body["status"]) == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
