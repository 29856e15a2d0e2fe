"""The console's registration-policy forms (shown on the settings page).

Set the global policy (or go back to the environment's default), and set or
clear a SCIM group's policy. Each POST carries the console's CSRF token (the
blueprint checks it) and is audited by ``idp_service/devices/registration_policy.py``
with the admin as actor and the policy before and after.

The re-verification windows (``idp_service/upstream/reauth.py``, docs/oidc.md) are
set and cleared here too, through the functions ``devicetrust reauth`` calls.
"""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, request

from idp_service.admin.auth import current_admin
from idp_service.admin.blueprint import bp
from idp_service.devices import registration_policy as rp
from idp_service.platform.errors import Invalid
from idp_service.upstream import reauth
from idp_service.web.context import ctx


def listing() -> dict[str, Any]:
    """What the settings page shows about registration policies."""
    with ctx().db.session() as s:
        return rp.listing(s, ctx().settings.registration_policy)


def reauth_listing() -> dict[str, Any]:
    """What the settings page shows about re-verification windows."""
    with ctx().db.session() as s:
        return reauth.policy_listing(s)


@bp.post("/settings/policy")
def set_policy() -> Response:
    """``scope=global`` or ``scope=group`` (with ``group``); ``policy`` or ``policy=clear``."""
    scope = request.form.get("scope", "")
    policy = request.form.get("policy", "")
    group = (request.form.get("group") or "").strip()
    env_default = ctx().settings.registration_policy
    actor = current_admin().actor
    if scope not in ("global", "group"):
        raise Invalid("bad_scope", "Choose the global policy or a group.")
    if scope == "group" and not 0 < len(group) <= 256:
        raise Invalid("group_required", "Name the SCIM group (displayName or id).")
    if policy != "clear":
        rp.check_policy(policy)
    with ctx().db.session() as s:
        if scope == "global":
            if policy == "clear":
                rp.clear_global(s, actor=actor, env_default=env_default)
            else:
                rp.set_global(s, policy, actor=actor, env_default=env_default)
        elif policy == "clear":
            rp.clear_group(s, group, actor=actor, env_default=env_default)
        else:
            rp.set_group(s, group, policy, actor=actor, env_default=env_default)
    return redirect("/admin/settings#policies", 303)


@bp.post("/settings/reauth")
def set_reauth() -> Response:
    """``scope=global`` or ``scope=group`` (with ``group``); ``action=set`` (with ``lifetime``,
    checkboxes ``required`` and ``second_device``) or ``action=clear``."""
    scope = request.form.get("scope", "")
    action = request.form.get("action", "set")
    group = (request.form.get("group") or "").strip()
    lifetime = (request.form.get("lifetime") or "").strip()
    actor = current_admin().actor
    if scope not in ("global", "group"):
        raise Invalid("bad_scope", "Choose the global window or a group.")
    if action not in ("set", "clear"):
        raise Invalid("bad_action", "Unknown action.")
    if scope == "group" and not 0 < len(group) <= 256:
        raise Invalid("group_required", "Name the SCIM group (displayName or id).")
    target = group if scope == "group" else None
    with ctx().db.session() as s:
        if action == "clear":
            reauth.clear_policy(s, group=target, actor=actor)
        else:
            reauth.set_policy(
                s,
                lifetime,
                required=request.form.get("required") == "on",
                second_device=request.form.get("second_device") == "on",
                group=target,
                actor=actor,
            )
    return redirect("/admin/settings#reauth", 303)
