"""Every module that defines tables, imported so that ``Base.metadata`` is complete.

Alembic's environment and the migration tests import this; add a line when a
feature adds a tables module.
"""

from idp_service import token_tables  # noqa: F401
from idp_service.admin import tables as admin_tables  # noqa: F401
from idp_service.devices import approval_tables, flag_tables  # noqa: F401
from idp_service.directory import tables as directory_tables  # noqa: F401
from idp_service.oidc import tables as oidc_tables  # noqa: F401
from idp_service.platform import job_tables, models, ratelimit_tables, session_tables  # noqa: F401
from idp_service.posture import tables as posture_tables  # noqa: F401
from idp_service.saml import tables as saml_tables  # noqa: F401
from idp_service.updates import store as update_tables  # noqa: F401
from idp_service.upstream import tables as upstream_tables  # noqa: F401
from idp_service.webhooks import tables as webhook_tables  # noqa: F401
