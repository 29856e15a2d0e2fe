"""What the SCIM endpoint announces, and how much it tolerates from real clients.

Everything here is data: the RFC 7643 schemas and resource types that
scim2-server ships, our :class:`~scim2_models.ServiceProviderConfig`, and the
:class:`~scim2_models.ScimPolicy` under which requests are read. The service,
the storage, the tests and the benchmark's in-memory peer all build on
:func:`build_provider`, so they agree on one description of the service.

Each departure from the strict reading of the RFCs is a policy option, chosen
for a client we must serve; ``docs/scim.md`` lists them with the reason.
"""

from __future__ import annotations

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ETag,
    External,
    Filter,
    Patch,
    Reference,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    Uniqueness,
)
from scim2_server.utils import load_default_resource_types, load_default_schemas

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# Bounds announced in ServiceProviderConfig and enforced by the service.
MAX_RESULTS = 1000
BULK_MAX_OPERATIONS = 1000
BULK_MAX_PAYLOAD = 1024 * 1024

# Okta and Entra ID both depart from RFC 7644 in ways scim2-models names:
# - unknown=ignore: Entra ID sends its own group schema URN
#   (http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group)
#   and both IdPs may send attributes an admin mapped but we do not declare.
#   They are dropped, not stored. A payload without the core schema is still refused.
# - remove_value_as_filter=apply: Entra ID removes group members with
#   {"op": "Remove", "path": "members", "value": [{"value": id}]}.
# - unmatched_path_filter=create: Entra ID replaces
#   emails[type eq "work"].value on users that have no work e-mail yet.
# Capitalised ops ("Replace"), "False" as a string, single-valued "Add" and
# no-path replaces with dotted keys need no setting: scim2-models reads them.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

BEARER_SCHEME = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="Bearer token",
    description="A named token made with `devicetrust scim-token create NAME`.",
    spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
    primary=True,
)


def service_provider_config() -> ServiceProviderConfig:
    """The capabilities we announce; the storage implements each of them.

    changePassword is off: devicetrust signs people in by device, and a
    password a client sends is discarded, never stored.
    """
    return ServiceProviderConfig(
        documentation_uri=Reference[External](
            "https://github.com/devicetrust/devicetrust/blob/main/docs/scim.md"
        ),
        patch=Patch(supported=True),
        bulk=Bulk(
            supported=True,
            max_operations=BULK_MAX_OPERATIONS,
            max_payload_size=BULK_MAX_PAYLOAD,
        ),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        authentication_schemes=[BEARER_SCHEME],
    )


def build_provider(policy: ScimPolicy | None = POLICY) -> ScimProvider:
    """The RFC 7643 User (with the enterprise extension) and Group resources.

    Group displayName is declared ``uniqueness: server``: Entra ID requires
    unique group names, and so does our storage.
    """
    schemas = load_default_schemas()
    group = schemas[GROUP_SCHEMA]
    for attribute in group.attributes or []:
        if attribute.name == "displayName":
            attribute.uniqueness = Uniqueness.server
    return ScimProvider.from_discovery(
        schemas.values(),
        load_default_resource_types().values(),
        config=service_provider_config(),
        policy=policy,
    )
