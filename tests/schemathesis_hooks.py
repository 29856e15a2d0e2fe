"""Schemathesis hooks for the admin-API run: aim some generated ids at seeded rows.

Random ids only ever reach the 404 branches; replacing a share of them with ids
of seeded devices, users and groups exercises the real actions too. The seeded
ids come from ``DEVICETRUST_TEST_API_IDS`` (JSON: parameter name -> ids).
"""

from __future__ import annotations

import json
import os
import zlib

import schemathesis

IDS: dict[str, list[str]] = json.loads(os.environ.get("DEVICETRUST_TEST_API_IDS", "{}"))


def _pick(name: str, value: object) -> object:
    choices = IDS.get(name)
    if not choices:
        return value
    h = zlib.crc32(repr(value).encode())  # deterministic for a given generated value
    return choices[h % len(choices)] if h % 3 else value


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):  # noqa: ANN001, ANN201
    if path_parameters:
        for name in list(path_parameters):
            path_parameters[name] = _pick(name, path_parameters[name])
    return path_parameters


@schemathesis.hook
def map_body(ctx, body):  # noqa: ANN001, ANN201
    if isinstance(body, dict) and "user_id" in body:
        body["user_id"] = _pick("user_id", body["user_id"])
    return body
