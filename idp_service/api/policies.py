"""Registration policies: read them, set the global one, set or clear a group's.

Also the re-verification windows (``/reauth/policies``), a mapping onto
:mod:`idp_service.upstream.reauth` (the functions ``devicetrust reauth`` calls).

A thin mapping onto :mod:`idp_service.devices.registration_policy`, which validates and
audits every change with the token as actor and the policy before and after.
"""

from __future__ import annotations

from typing import Any

from idp_service.api import schema as S
from idp_service.api.core import Call
from idp_service.api.core import operation as op
from idp_service.devices import registration_policy as rp
from idp_service.platform.errors import NotFound
from idp_service.upstream import reauth
from idp_service.web.context import ctx

POLICY = {"enum": list(rp.POLICIES)}
STAMP = {
    "updated_at": S.TIMESTAMP_OR_NULL,
    "updated_by": {"type": ["string", "null"]},
}
LISTING = S.obj(
    {
        "global": S.obj(
            {
                "policy": POLICY,
                "source": {"enum": ["env", "setting"]},
                "env_default": POLICY,
                **STAMP,
            },
            ("policy", "source", "env_default", "updated_at", "updated_by"),
        ),
        "groups": S.array(
            S.obj(
                {"group_id": {"type": "string"}, "group": {"type": "string"}, "policy": POLICY}
                | STAMP,
                ("group_id", "group", "policy", "updated_at", "updated_by"),
            )
        ),
    },
    ("global", "groups"),
)
CHANGE = S.obj(
    {
        "scope": {"enum": ["global", "group"]},
        "group_id": {"type": ["string", "null"]},
        "before": {"enum": [*rp.POLICIES, None]},
        "after": {"enum": [*rp.POLICIES, None]},
    },
    ("scope", "group_id", "before", "after"),
)
BODY = S.obj({"policy": POLICY}, ("policy",))
GROUP_PATH = {"group": S.string(256, min_length=1)}


def _env() -> str:
    return ctx().settings.registration_policy


def _group(call: Call) -> str:
    ref = call.path["group"]
    if not S.storable(ref):
        raise NotFound("group_not_found", "no such SCIM group")
    return ref


@op(
    "GET",
    "/policies",
    summary="The registration policies: global (and where it comes from) and per group",
    tag="policies",
    response=LISTING,
)
def list_policies(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return rp.listing(s, _env())


@op(
    "PUT",
    "/policies/global",
    summary="Set the global registration policy (overrides DEVICETRUST_REGISTRATION_POLICY)",
    tag="policies",
    body=BODY,
    response=CHANGE,
)
def set_global_policy(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return rp.set_global(s, call.body["policy"], actor=call.actor, env_default=_env())


@op(
    "DELETE",
    "/policies/global",
    summary="Drop the stored global policy: the environment's default applies again",
    tag="policies",
    response=CHANGE,
)
def clear_global_policy(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return rp.clear_global(s, actor=call.actor, env_default=_env())


@op(
    "PUT",
    "/policies/groups/{group}",
    summary="Set a SCIM group's registration policy (group by id or displayName)",
    tag="policies",
    path_params=GROUP_PATH,
    body=BODY,
    response=CHANGE,
)
def set_group_policy(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return rp.set_group(
            s, _group(call), call.body["policy"], actor=call.actor, env_default=_env()
        )


@op(
    "DELETE",
    "/policies/groups/{group}",
    summary="Clear a SCIM group's registration policy",
    tag="policies",
    path_params=GROUP_PATH,
    response=CHANGE,
)
def clear_group_policy(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return rp.clear_group(s, _group(call), actor=call.actor, env_default=_env())


# -- re-verification windows (idp_service/upstream/reauth.py, docs/oidc.md) -------------------

REAUTH_VIEW = S.obj(
    {
        "scope": {"type": "string"},
        "group_id": {"type": "string"},
        "group": {"type": "string"},
        "lifetime": {"type": "string"},
        "lifetime_seconds": {"type": "integer"},
        "required": {"type": "boolean"},
        "second_device": {"type": "boolean"},
        "updated_at": S.TIMESTAMP_OR_NULL,
        "updated_by": {"type": ["string", "null"]},
    },
    ("scope", "lifetime", "lifetime_seconds", "required", "second_device"),
)
REAUTH_LISTING = S.obj(
    {"global": {"oneOf": [REAUTH_VIEW, {"type": "null"}]}, "groups": S.array(REAUTH_VIEW)},
    ("global", "groups"),
)
REAUTH_BODY = S.obj(
    {
        "lifetime": S.string(32, min_length=1),
        "required": {"type": "boolean"},
        "second_device": {"type": "boolean"},
    },
    ("lifetime",),
)
REAUTH_SET = S.obj(
    {
        "scope": {"type": "string"},
        "lifetime": {"type": "string"},
        "required": {"type": "boolean"},
        "second_device": {"type": "boolean"},
    },
    ("scope", "lifetime", "required", "second_device"),
)
REAUTH_CLEARED = S.obj(
    {"scope": {"type": "string"}, "cleared": {"type": "boolean"}}, ("scope", "cleared")
)


def _set_reauth(call: Call, group: str | None) -> dict[str, Any]:
    body = call.body
    with call.db.session() as s:
        return reauth.set_policy(
            s,
            body["lifetime"],
            required=body.get("required", False),
            second_device=body.get("second_device", False),
            group=group,
            actor=call.actor,
        )


@op(
    "GET",
    "/reauth/policies",
    summary="The re-verification windows: global and per SCIM group",
    tag="policies",
    response=REAUTH_LISTING,
)
def list_reauth_policies(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return reauth.policy_listing(s)


@op(
    "PUT",
    "/reauth/policies/global",
    summary="Set the global re-verification window (lifetime, required, second_device)",
    tag="policies",
    body=REAUTH_BODY,
    response=REAUTH_SET,
    errors=(400,),
)
def set_global_reauth(call: Call) -> dict[str, Any]:
    return _set_reauth(call, None)


@op(
    "DELETE",
    "/reauth/policies/global",
    summary="Remove the global re-verification window",
    tag="policies",
    response=REAUTH_CLEARED,
)
def clear_global_reauth(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return reauth.clear_policy(s, group=None, actor=call.actor)


@op(
    "PUT",
    "/reauth/policies/groups/{group}",
    summary="Set a SCIM group's re-verification window (group by id or displayName)",
    tag="policies",
    path_params=GROUP_PATH,
    body=REAUTH_BODY,
    response=REAUTH_SET,
    errors=(400, 404),
)
def set_group_reauth(call: Call) -> dict[str, Any]:
    return _set_reauth(call, _group(call))


@op(
    "DELETE",
    "/reauth/policies/groups/{group}",
    summary="Remove a SCIM group's re-verification window",
    tag="policies",
    path_params=GROUP_PATH,
    response=REAUTH_CLEARED,
    errors=(404,),
)
def clear_group_reauth(call: Call) -> dict[str, Any]:
    with call.db.session() as s:
        return reauth.clear_policy(s, group=_group(call), actor=call.actor)
