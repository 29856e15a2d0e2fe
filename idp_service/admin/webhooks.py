"""The webhooks page: endpoints (add, enable/disable, rotate, test, remove) and the delivery log.

A new endpoint's secret, and a rotated one, are shown once on the page that
answers the POST (never stored in the session, never in a redirect).
"""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, render_template, request

from idp_service.admin.auth import current_admin
from idp_service.admin.blueprint import bp
from idp_service.platform.errors import Invalid
from idp_service.web.context import ctx
from idp_service.webhooks import catalog, endpoints
from idp_service.webhooks.service import DELIVERY_STATUSES, check_status


def _int(name: str, value: str | None) -> int | None:
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise Invalid("bad_query", f"{name} must be a whole number")
    return int(value)


def _page(**extra: Any) -> str:
    args = request.args
    status = check_status((args.get("status") or "").strip())
    flt = endpoints.DeliveryFilter(endpoint_id=_int("webhook", args.get("webhook")), status=status)
    before = _int("before", args.get("before"))
    with ctx().db.session() as s:
        rows = endpoints.list_endpoints(s)
        deliveries, more = endpoints.delivery_page(s, flt, before=before)
    query = {k: v for k, v in {"webhook": flt.endpoint_id, "status": status}.items() if v}
    return render_template(
        "admin/webhooks.html",
        endpoints=rows,
        deliveries=deliveries,
        more=more,
        before=before,
        query=query,
        flt=flt,
        statuses=DELIVERY_STATUSES,
        event_types=catalog.ALL_TYPES,
        **extra,
    )


@bp.get("/webhooks")
def webhooks() -> str:
    """Endpoints and the delivery log (newest first, paged, by endpoint and status)."""
    return _page()


@bp.post("/webhooks")
def webhook_add() -> str:
    """Add an endpoint; the answer shows its secret once."""
    form = request.form
    events = form.getlist("event_types")
    with ctx().db.session() as s:
        row, secret = endpoints.create(
            s,
            (form.get("url") or "").strip(),
            actor=current_admin().actor,
            description=(form.get("description") or "").strip(),
            event_types=events or None,
        )
        shown = {"endpoint_id": row.id, "url": row.url, "secret": secret}
    return _page(new_secret=shown)


@bp.post("/webhooks/<int:endpoint_id>/active")
def webhook_active(endpoint_id: int) -> Response:
    """Enable or disable an endpoint."""
    active = request.form.get("active")
    if active not in ("true", "false"):
        raise Invalid("bad_active", "active is true or false")
    with ctx().db.session() as s:
        endpoints.update(s, endpoint_id, {"active": active == "true"}, actor=current_admin().actor)
    return redirect("/admin/webhooks", 303)


@bp.post("/webhooks/<int:endpoint_id>/rotate")
def webhook_rotate(endpoint_id: int) -> str:
    """Give an endpoint a new secret; the answer shows it once."""
    with ctx().db.session() as s:
        row, secret = endpoints.rotate(s, endpoint_id, actor=current_admin().actor)
        shown = {"endpoint_id": row.id, "url": row.url, "secret": secret}
    return _page(new_secret=shown)


@bp.post("/webhooks/<int:endpoint_id>/test")
def webhook_send_test(endpoint_id: int) -> Response:
    """Queue a webhook.test event for one endpoint."""
    with ctx().db.session() as s:
        endpoints.send_test(s, endpoint_id, actor=current_admin().actor)
    return redirect(f"/admin/webhooks?webhook={endpoint_id}", 303)


@bp.post("/webhooks/<int:endpoint_id>/delete")
def webhook_delete(endpoint_id: int) -> Response:
    """Remove an endpoint and its delivery log."""
    with ctx().db.session() as s:
        endpoints.remove(s, endpoint_id, actor=current_admin().actor)
    return redirect("/admin/webhooks", 303)


@bp.post("/webhook-deliveries/<int:delivery_id>/redeliver")
def webhook_redeliver(delivery_id: int) -> Response:
    """Send a delivery's event again, as a new delivery."""
    with ctx().db.session() as s:
        row = endpoints.redeliver(s, delivery_id, actor=current_admin().actor)
        endpoint_id = row.endpoint_id
    return redirect(f"/admin/webhooks?webhook={endpoint_id}", 303)
