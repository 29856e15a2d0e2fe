"""Imports every module that defines tables, so ``Base.metadata`` is complete.

Add a line here when a surface adds a models module.
"""

from idp_service.storage import models  # noqa: F401
from scim import tables  # noqa: F401
