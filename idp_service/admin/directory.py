"""Read-only directory pages: users and groups (from SCIM) and the registered SPs."""

from __future__ import annotations

from flask import render_template, request

from idp_service.admin import queries
from idp_service.admin.blueprint import bp
from idp_service.directory import queries as directory_queries
from idp_service.platform.errors import Invalid
from idp_service.platform.identity import name_key
from idp_service.saml import registry as sp_registry
from idp_service.web.context import ctx


@bp.get("/users")
def users() -> str:
    """Users by userName, paged by keyset, with a prefix search."""
    q = name_key((request.args.get("q") or "").strip())
    after = name_key((request.args.get("after") or "").strip())
    if len(q) > queries.MAX_QUERY or len(after) > 256:
        raise Invalid("bad_query", "search text is too long")
    with ctx().db.session() as s:
        rows = directory_queries.users_by_name(s, limit=queries.PAGE, prefix=q, after=after)
        page = rows[: queries.PAGE]
        counts = directory_queries.device_counts(s, [u.id for u in page])
    more = page[-1].user_name_lower if len(rows) > queries.PAGE else None
    return render_template("admin/users.html", users=page, counts=counts, q=q, more=more)


@bp.get("/groups")
def groups() -> str:
    """Groups with their member counts (the admin group marked)."""
    with ctx().db.session() as s:
        rows = directory_queries.groups_with_counts(s, limit=1000)
    return render_template(
        "admin/groups.html", rows=rows, admin_group=name_key(ctx().settings.admin_group)
    )


@bp.get("/sps")
def sps() -> str:
    """The SAML service providers."""
    with ctx().db.session() as s:
        rows = [sp_registry.to_json(sp) for sp in sp_registry.list_all(s)]
    return render_template("admin/sps.html", sps=rows)
