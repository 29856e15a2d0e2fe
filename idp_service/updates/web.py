"""Agent-facing update routes: the current signed manifest, the update key, artifacts.

* ``GET /agent/v1/update-manifest``: the current signed manifest document, byte
  for byte as signed (404 ``no_update_manifest`` before the first publish).
* ``GET /agent/v1/update-key``: the trusted update public key and its id, which
  an agent pins at enrollment unless its configuration pins one (404
  ``no_update_key``).
* ``GET /agent/v1/update-artifacts/<name>``: an artifact the service serves
  itself from its data directory (``devicetrust updates add-artifact``).

Nothing here needs trust in the transport: the agent checks the manifest's
signature under its pinned key, and every artifact's size and SHA-256.
These routes count in the ``agent`` rate-limit group (``idp_service/web/ratelimit.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, jsonify, send_file

from idp_service.updates import service
from idp_service.web.context import ctx
from idp_service.web.errors import ApiError
from trust_protocol.challenge import key_id
from trust_protocol.encoding import b64e

bp = Blueprint("updates", __name__, url_prefix="/agent/v1")

if TYPE_CHECKING:
    from idp_service.services import Services


def init_app(app: Flask, services: Services) -> None:
    """Serve the signed update manifest, its public key and the service's own artifacts."""
    app.register_blueprint(bp)


@bp.get("/update-manifest")
def manifest() -> Response:
    """The current signed update manifest."""
    document = service.current_document(ctx().db)
    if document is None:
        raise ApiError("no_update_manifest", "no update manifest is published", 404)
    resp = Response(document, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/update-key")
def key() -> Response:
    """The update public key agents pin (when their configuration names none)."""
    found = service.trusted_key(ctx().db)
    if found is None:
        raise ApiError("no_update_key", "this service publishes no update key", 404)
    return jsonify({"update_key": b64e(bytes(found)), "kid": key_id(found)})


@bp.get("/update-artifacts/<name>")
def artifact(name: str) -> Response:
    """An artifact from the service's artifact directory."""
    path = service.artifact_path(ctx().settings.data_dir, name)
    if path is None:
        raise ApiError("not_found", "no such artifact", 404)
    return send_file(path, mimetype="application/octet-stream", max_age=0, conditional=False)
