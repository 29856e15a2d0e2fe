"""The directory: people and groups, whoever writes them (SCIM, the CLI, sign-in enrolment).

:mod:`~idp_service.directory.users` looks people up and creates them under one
normalisation; :mod:`~idp_service.directory.tables` holds the group tables SCIM
writes and :mod:`~idp_service.directory.groups` reads group membership (nested)
for the sign-in, the console, SAML attributes and registration policies.
"""
