"""SCIM 2.0 provisioning: users and groups arrive from the organization's IdP.

The package follows scim2-server's own split, one concern per module:

- :mod:`scim.provider`: what the service announces (schemas, resource types,
  capabilities) and the :class:`~scim2_models.ScimPolicy` that makes Okta's and
  Entra ID's departures from the RFCs acceptable;
- :mod:`scim.service`: the protocol steps, without any input or output;
- :mod:`scim.storage`: the SQLAlchemy :class:`~scim2_server.storage.ScimStorage`
  over the ``users``, ``groups`` and ``group_members`` tables (the group tables
  and membership reads are the directory's: :mod:`idp_service.directory.tables`
  and :mod:`idp_service.directory.groups`, which the rest of the service reads
  without importing this package);
- :mod:`scim.lifecycle`: what deactivating, reactivating or deleting a user
  does to that user's devices;
- :mod:`scim.app`: the thin WSGI application (bearer auth, one transaction and
  one audit event per request) mounted at ``/scim/v2`` in the Flask service;
- the named bearer tokens and the ``devicetrust scim-token`` commands are the
  service's own (:mod:`idp_service.tokens`, shared with the admin API's tokens);
- :mod:`scim.auth` and :mod:`scim.audit`: checking a request's token against a
  per-process copy of the live tokens, and the request's audit event, whose
  INSERT checks the token again in the request's transaction.
"""
