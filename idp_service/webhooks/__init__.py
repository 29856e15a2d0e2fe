"""Events: signed webhooks fired by device decisions and compliance changes.

* :mod:`~idp_service.webhooks.catalog` - which audited decisions are events, and their payload.
* :mod:`~idp_service.webhooks.outbox` - enqueue an event in the decision's own transaction.
* :mod:`~idp_service.webhooks.endpoints` - endpoints: add, change, remove, rotate, test.
* :mod:`~idp_service.webhooks.dispatcher` - delivers and retries (a periodic job, schedule.py).

Signatures follow Standard Webhooks (``trust_protocol/webhook_signature.py``).
See ``docs/events.md``.
"""
