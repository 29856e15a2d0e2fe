"""Benchmark: how long a webhook event waits between its commit and its delivery.

Starts the service in-process as ``devicetrust serve`` does (``create_app(background=True)``:
its periodic jobs, among them webhook dispatch), on a fresh SQLite database, with
a local receiver; then queues ``--n`` test events one at a time at random moments
and measures, for each, the time from its commit to the receiver's answer. The
dispatcher looks for due deliveries every ``DEVICETRUST_WEBHOOK_POLL`` seconds, so
the median should be about half the poll, and the maximum about one poll plus
one delivery.

Runs on any checkout with the same ``create_app`` (run it on two, back to back,
to compare them).

Usage: python bench/webhook_latency.py [--n 40] [--poll 1] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from idp_service.app import create_app
from idp_service.platform.config import Settings
from idp_service.platform.migrate import upgrade
from idp_service.webhooks import endpoints


class _Receiver(BaseHTTPRequestHandler):
    arrivals: list[float] = []
    seen = threading.Condition()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()
        with self.seen:
            self.arrivals.append(time.monotonic())
            self.seen.notify_all()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    """Measure and print commit-to-delivery latencies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="events to send, one at a time")
    parser.add_argument("--poll", default="1", help="DEVICETRUST_WEBHOOK_POLL")
    parser.add_argument("--smoke", action="store_true", help="3 events, poll 0.2 s (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.poll = 3, "0.2"

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        settings = Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": url,
                "DEVICETRUST_DATA_DIR": tmp,
                "DEVICETRUST_WEBHOOK_POLL": args.poll,
                "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true",
            }
        )
        app = create_app(settings, background=True)
        db = app.extensions["devicetrust"].db
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        with db.session() as s:
            endpoint, _ = endpoints.create(s, hook, actor="bench")
            endpoint_id = endpoint.id
        latencies = []
        for _ in range(args.n):
            time.sleep(random.uniform(0, float(args.poll)))  # noqa: S311 - not security
            with _Receiver.seen:
                before = len(_Receiver.arrivals)
            with db.session() as s:
                endpoints.send_test(s, endpoint_id, actor="bench")
            committed = time.monotonic()
            with _Receiver.seen:
                if not _Receiver.seen.wait_for(lambda b=before: len(_Receiver.arrivals) > b, 30):
                    raise SystemExit("an event was not delivered within 30 s")
                latencies.append(_Receiver.arrivals[before] - committed)
        server.shutdown()
    ms = sorted(1000 * x for x in latencies)
    print(
        f"webhook commit-to-delivery, poll {args.poll} s, {len(ms)} events: "
        f"median {statistics.median(ms):.0f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
