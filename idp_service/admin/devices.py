"""Device pages: the searchable list, the approval queue, one device, and the actions."""

from __future__ import annotations

from flask import Response, abort, redirect, render_template, request

from idp_service.admin import queries
from idp_service.admin.auth import current_admin
from idp_service.admin.blueprint import bp, reason_from_form
from idp_service.devices import approve, detection, registry, states
from idp_service.devices import queries as device_queries
from idp_service.directory import users
from idp_service.platform.errors import Invalid, NotFound
from idp_service.platform.models import DEVICE_STATES
from idp_service.upstream import reauth
from idp_service.web.context import ctx

STATE_ACTIONS = states.ADMIN_ACTIONS
ACTIONS = (*STATE_ACTIONS, "delete", "change_owner", "resolve_flags", "reverify")


@bp.get("/devices")
def devices() -> str:
    """Search (id, hardware UUID, serial, hostname, owner), filter by state/platform, paged."""
    flt = queries.DeviceFilter.parse(request.args)
    with ctx().db.session() as s:
        rows, more = queries.search_devices(s, flt)
        platforms = queries.platforms(s)
    return render_template(
        "admin/devices.html",
        rows=rows,
        more=more,
        flt=flt,
        platforms=platforms,
        states=DEVICE_STATES,
        title="Devices",
    )


@bp.get("/pending")
def pending() -> str:
    """Devices waiting for an admin's decision."""
    flt = queries.DeviceFilter.parse({**request.args, "state": "pending"})
    with ctx().db.session() as s:
        rows, more = queries.search_devices(s, flt)
        review, review_more = queries.search_devices(s, queries.DeviceFilter(review=True))
        found = approve.latest_requests(s, [d.id for d, _ in rows])  # one query for the page
        requests = {device_id: approve.request_view(r) for device_id, r in found.items()}
    return render_template(
        "admin/pending.html",
        rows=rows,
        more=more,
        flt=flt,
        review=review,
        review_more=review_more,
        requests=requests,
    )


@bp.get("/devices/<device_id>")
def device(device_id: str) -> str:
    """Everything about one device: identity, facts, checks and their history, audit trail."""
    if len(device_id) > 64:
        abort(404)
    with ctx().db.session() as s:
        dev = device_queries.get(s, device_id)
        if dev is None:
            abort(404)
        owner = device_queries.owner(s, dev)
        facts = device_queries.facts(s, device_id)
        results = device_queries.check_results(s, device_id)
        history = device_queries.check_history(s, device_id, limit=50)
        events, _ = queries.audit_page(s, queries.AuditFilter(device_id=device_id), limit=50)
        flags = device_queries.flags(s, device_id, limit=50)
        request_row = approve.latest_requests(s, [device_id]).get(device_id)
        approval = approve.request_view(request_row) if request_row is not None else None
    return render_template(
        "admin/device.html",
        device=dev,
        owner=owner,
        facts=facts,
        results=results,
        history=history,
        events=events,
        flags=flags,
        approval=approval,
        actions=[a for a in STATE_ACTIONS if states.allowed(a, dev.state)],
    )


@bp.post("/devices/<device_id>/action")
def device_action(device_id: str) -> Response:
    """Approve, deny, revoke, re-trust, re-verify, delete or change the owner; each with a
    reason."""
    action = request.form.get("action", "")
    if action not in ACTIONS:
        raise Invalid("bad_action", "Unknown device action.")
    reason = reason_from_form()
    actor = current_admin().actor
    with ctx().db.session() as s:
        if action == "delete":
            registry.delete_device(s, device_id, reason=reason, actor=actor)
        elif action == "change_owner":
            new_owner = (request.form.get("user") or "").strip()
            if not new_owner or len(new_owner) > 256:
                raise Invalid("user_required", "Name the new owner's userName.")
            owner = users.find(s, new_owner)
            if owner is None:
                raise NotFound("user_not_found", f"no user {new_owner!r}")
            registry.change_owner(s, device_id, owner.id, reason=reason, actor=actor)
        elif action == "resolve_flags":
            detection.mark_reviewed(s, device_id, reason=reason, actor=actor)
        elif action == "reverify":  # an upstream sign-in at its next sign-in (docs/oidc.md)
            target = reauth.reverify_target(s, user=None, device=device_id)
            reauth.reverify(
                s,
                device_ids=target["device_ids"],
                user_id=target["user_id"],
                actor=actor,
                reason=reason,
            )
        else:
            registry.change_state(s, device_id, action, reason=reason, actor=actor)
    back = request.form.get("back", "")
    if back not in ("pending", "devices"):
        back = "device"
    if action == "delete" or back == "devices":
        return redirect("/admin/devices", 303)
    if back == "pending":
        return redirect("/admin/pending", 303)
    return redirect(f"/admin/devices/{device_id}", 303)
