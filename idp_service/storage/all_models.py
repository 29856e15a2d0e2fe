"""Imports every module that defines tables, so ``Base.metadata`` is complete.

Add a line here when a surface adds a models module.
"""

from idp_service.admin import tables as admin_tables  # noqa: F401
from idp_service.saml import models as saml_models  # noqa: F401
from idp_service.storage import (
    api_tables,  # noqa: F401, E402
    approval_tables,  # noqa: F401
    flag_tables,  # noqa: F401
    models,  # noqa: F401
    posture_tables,  # noqa: F401, E402
    ratelimit_tables,  # noqa: F401
    webhook_tables,  # noqa: F401, E402
)
from idp_service.updates import store as update_tables  # noqa: F401
from scim import tables  # noqa: F401
