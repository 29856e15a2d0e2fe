"""``devicetrust webhook``: endpoints that receive signed events, and their delivery log.

``add`` and ``rotate`` print the endpoint's signing secret, the only times it is
shown. Every command that prints data takes ``--json``; every change is audited
(actor ``cli``).
"""

from __future__ import annotations

from typing import Any

import click

from idp_service.platform.cli_support import in_session
from trust_protocol.cli_output import emit

ACTOR = "cli"


@click.group("webhook")
def webhook() -> None:
    """Webhook endpoints: signed events on device decisions and compliance changes."""


@webhook.command("add")
@click.argument("url")
@click.option("--description", default="", help="What this endpoint is for.")
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Only this event type (repeatable; default: every type). See docs/events.md.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_add(url: str, description: str, events: tuple[str, ...], as_json: bool) -> None:
    """Add an endpoint URL (http or https); prints its signing secret once."""
    from idp_service.webhooks import endpoints

    def action(session: Any) -> dict[str, Any]:
        row, secret = endpoints.create(
            session,
            url,
            actor=ACTOR,
            description=description,
            event_types=list(events) or None,
        )
        return {"endpoint": endpoints.endpoint_json(row), "secret": secret}

    data = in_session(action)
    emit(
        data,
        as_json,
        f"endpoint {data['endpoint']['id']} added: {data['endpoint']['url']}\n"
        f"signing secret (shown once; keep it on the receiver): {data['secret']}",
    )


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_list(as_json: bool) -> None:
    """Every endpoint (never the secrets)."""
    from idp_service.webhooks import endpoints

    data = in_session(lambda s: [endpoints.endpoint_json(e) for e in endpoints.list_endpoints(s)])
    lines = [
        f"{e['id']:>4}  {'active  ' if e['active'] else 'disabled'}  {e['url']}  "
        f"{','.join(e['event_types']) if e['event_types'] else 'all events'}"
        for e in data
    ]
    emit(data, as_json, "\n".join(lines) or "no webhook endpoints")


@webhook.command("remove")
@click.argument("endpoint_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_remove(endpoint_id: int, as_json: bool) -> None:
    """Remove an endpoint and its delivery log."""
    from idp_service.webhooks import endpoints

    data = in_session(lambda s: endpoints.remove(s, endpoint_id, actor=ACTOR))
    emit({"deleted": data}, as_json, f"endpoint {endpoint_id} removed")


@webhook.command("enable")
@click.argument("endpoint_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_enable(endpoint_id: int, as_json: bool) -> None:
    """Deliver to this endpoint again (queued events are sent)."""
    _set_active(endpoint_id, True, as_json)


@webhook.command("disable")
@click.argument("endpoint_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_disable(endpoint_id: int, as_json: bool) -> None:
    """Stop delivering to this endpoint (new events are not queued for it)."""
    _set_active(endpoint_id, False, as_json)


def _set_active(endpoint_id: int, active: bool, as_json: bool) -> None:
    from idp_service.webhooks import endpoints

    data = in_session(
        lambda s: endpoints.endpoint_json(
            endpoints.update(s, endpoint_id, {"active": active}, actor=ACTOR)
        )
    )
    emit(data, as_json, f"endpoint {endpoint_id} {'enabled' if active else 'disabled'}")


@webhook.command("rotate")
@click.argument("endpoint_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_rotate(endpoint_id: int, as_json: bool) -> None:
    """Replace an endpoint's signing secret now; prints the new one once."""
    from idp_service.webhooks import endpoints

    def action(session: Any) -> dict[str, Any]:
        row, secret = endpoints.rotate(session, endpoint_id, actor=ACTOR)
        return {"endpoint": endpoints.endpoint_json(row), "secret": secret}

    data = in_session(action)
    emit(data, as_json, f"new signing secret for endpoint {endpoint_id}: {data['secret']}")


@webhook.command("test")
@click.argument("endpoint_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_test(endpoint_id: int, as_json: bool) -> None:
    """Queue a webhook.test event for one endpoint (the running service sends it)."""
    from idp_service.webhooks import endpoints

    data = in_session(
        lambda s: endpoints.delivery_json(endpoints.send_test(s, endpoint_id, actor=ACTOR))
    )
    emit(data, as_json, f"test event {data['event_id']} queued as delivery {data['id']}")


@webhook.command("redeliver")
@click.argument("delivery_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_redeliver(delivery_id: int, as_json: bool) -> None:
    """Send a delivery's event again, as a new delivery."""
    from idp_service.webhooks import endpoints

    data = in_session(
        lambda s: endpoints.delivery_json(endpoints.redeliver(s, delivery_id, actor=ACTOR))
    )
    emit(data, as_json, f"event {data['event_id']} queued again as delivery {data['id']}")


@webhook.command("deliveries")
@click.option("--endpoint", "endpoint_id", type=int, help="Only this endpoint's deliveries.")
@click.option(
    "--status", type=click.Choice(["pending", "delivered", "failed"]), help="Only this status."
)
@click.option("--before", type=int, help="Only deliveries with a smaller id (paging).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhook_deliveries(
    endpoint_id: int | None, status: str | None, before: int | None, limit: int, as_json: bool
) -> None:
    """The delivery log, newest first."""
    from idp_service.webhooks import endpoints

    def action(session: Any) -> list[dict[str, Any]]:
        flt = endpoints.DeliveryFilter(endpoint_id=endpoint_id, status=status)
        rows, _ = endpoints.delivery_page(session, flt, before=before, limit=limit)
        return [endpoints.delivery_json(r) for r in rows]

    data = in_session(action)
    lines = [
        f"{d['id']:>6}  ep {d['endpoint_id']:<4} {d['status']:<9} x{d['attempts']:<2} "
        f"{d['last_status_code'] or '-':<4} {d['event_type']:<28} {d['last_error'] or ''}"
        for d in data
    ]
    emit(data, as_json, "\n".join(lines) or "no deliveries")
