"""Signed agent self-update, service side: store, publish and serve update manifests.

The update key that signs manifests is kept apart from the challenge key and,
ideally, offline: ``devicetrust updates keygen`` and ``devicetrust updates sign``
run on an admin machine, and the service only checks a signed manifest against
the public key it was told to trust, stores it and serves it to agents. The
wire format is ``trust_protocol/update_manifest.py`` (``docs/protocol.md`` §15).

* :mod:`idp_service.updates.store` - the tables.
* :mod:`idp_service.updates.service` - trust a key, publish, derive pinned or
  staged manifests, key files, the artifact directory (no Flask).
* :mod:`idp_service.updates.web` - ``/agent/v1/update-manifest``, ``update-key``
  and ``update-artifacts/<name>``.
* :mod:`idp_service.updates.cli` - ``devicetrust updates ...``.
"""
