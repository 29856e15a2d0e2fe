"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from idp_service.platform.migrate import is_current
from idp_service.web.context import ctx

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database answers and its schema is current."""
    try:
        engine = ctx().db.engine
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = is_current(ctx().settings.database_url, engine)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return jsonify({"status": "unavailable", "reason": type(exc).__name__}), 503
    if not current:
        return jsonify({"status": "unavailable", "reason": "migrations pending"}), 503
    return jsonify({"status": "ready"}), 200
