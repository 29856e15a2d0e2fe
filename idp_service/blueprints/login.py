"""The login page and its JSON endpoints (filled in below)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("login", __name__)
