"""The ``devicetrust-agent`` command: run, status, id, enroll, facts and user-helper.

``run`` keeps the local channel open for the login page. ``enroll URL CODE``
registers this device with a service using a one-time code from IT. ``id``
shows the device id and key fingerprints (to compare with the admin console).
``user-helper`` runs in each user's session and reports that user's screen lock
to the system agent (``agent/user_helper.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent import __version__, state
from agent.keys import KeyPermissionError, check_permissions, load_or_create
from agent.paths import default_state_dir
from trust_protocol.ports import parse_ports


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def _keys(state_dir: Path):  # noqa: ANN202 - DeviceKeys
    try:
        keys, created = load_or_create(state_dir)
    except KeyPermissionError as exc:
        raise click.ClickException(str(exc)) from None
    if created:
        click.echo(f"created device keys in {state_dir}", err=True)
    return keys


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where keys and enrollment live (default: the per-OS agent directory).",
)
@click.version_option(__version__, message="devicetrust-agent %(version)s")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None) -> None:
    """devicetrust-agent: proves to your company's sign-in service that this device is trusted.

    Its keys never leave this device. Start with `enroll URL CODE` (the code comes
    from IT), then keep `run` going (the installer does this for you).
    """
    ctx.obj = state_dir or default_state_dir()


@cli.command("id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show_id(state_dir: Path, as_json: bool) -> None:
    """Show the device id and the fingerprints of its public keys."""
    keys = _keys(state_dir)
    data = {"device_id": keys.device_id, **keys.fingerprints()}
    _emit(
        data,
        as_json,
        f"device id: {keys.device_id}\n"
        f"signing key: {data['sign_key']}\n"
        f"box key:     {data['box_key']}",
    )


@cli.command()
@click.argument("url")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def enroll(state_dir: Path, url: str, code: str, as_json: bool) -> None:
    """Enroll this device with the service at URL, using the one-time CODE from IT."""
    from agent.enroll import EnrollError
    from agent.enroll import enroll as do_enroll

    _keys(state_dir)
    try:
        result = do_enroll(state_dir, url, code)
    except EnrollError as exc:
        hint = f"\n{exc.hint}" if exc.hint else ""
        raise click.ClickException(f"enrollment failed ({exc.code}): {exc.message}{hint}") from None
    data = {"server_url": result.server_url, "user": result.user, "state": result.state}
    explain = {
        "trusted": "This device is trusted.",
        "pending": "It now waits for approval by IT or by one of your trusted devices.",
    }.get(result.state, "")
    _emit(
        data,
        as_json,
        f"enrolled with {result.server_url} as {result.user}: {result.state}. {explain}",
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(state_dir: Path, as_json: bool) -> None:
    """Show whether this device is enrolled, with which service, and key health."""
    data: dict[str, Any] = {"state_dir": str(state_dir), "version": __version__}
    try:
        if state_dir.exists():
            check_permissions(state_dir)
        data["keys"] = "ok" if (state_dir / "sign.key").exists() else "not created yet"
    except KeyPermissionError as exc:
        data["keys"] = f"unsafe permissions: {exc}"
    enrollment = state.load(state_dir) if state_dir.exists() else None
    data["enrolled"] = enrollment is not None
    if enrollment is not None:
        data.update(server_url=enrollment.server_url, user=enrollment.user, state=enrollment.state)
    if enrollment is None:
        text = "not enrolled. Run: devicetrust-agent enroll URL CODE"
    else:
        text = f"enrolled with {enrollment.server_url} as {enrollment.user} ({enrollment.state})"
    _emit(data, as_json, f"{text}\nkeys: {data['keys']}\nstate directory: {state_dir}")


def _host(replay: Path | None):  # noqa: ANN202 - Host
    from agent.collectors.base import Host

    return Host.from_recording(replay) if replay else Host.local()


def _collector(  # noqa: ANN202 - Callable[[dict], dict]
    replay: Path | None, user_reports: Callable[[int], dict[str, Any] | None] | None = None
):
    """This device's fact collection (or a recorded device's, with --replay)."""

    def collect(osquery_queries: dict[str, str]) -> dict[str, Any]:
        from agent.collectors import collect_facts
        from agent.collectors.osquery import OsqueryConfig

        config = OsqueryConfig(queries=osquery_queries) if osquery_queries else None
        host = _host(replay)
        host.user_reports = user_reports
        return collect_facts(host, osquery=config)

    return collect


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def approve(state_dir: Path, as_json: bool) -> None:
    """Show codes that let a new device of yours in (this device must be trusted)."""
    from agent import http_client
    from agent.approve import describe, fetch

    enrollment = state.load(state_dir)
    if enrollment is None:
        raise click.ClickException("not enrolled. Run: devicetrust-agent enroll URL CODE")
    try:
        found = fetch(enrollment, _keys(state_dir))
    except http_client.ServerError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    text = "\n".join(describe(r) for r in found) or "no device is waiting for your approval"
    _emit({"requests": [r.to_json() for r in found]}, as_json, text)


@cli.command()
@click.option(
    "--no-callback",
    is_flag=True,
    envvar="DEVICETRUST_AGENT_NO_CALLBACK",
    help="Answer only through the browser; do not also POST to the service directly.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Report the facts of a recorded device (a directory with host.json): for demos/tests.",
)
@click.option("--no-reports", is_flag=True, help="Do not send posture reports (sign-ins only).")
@click.option(
    "--no-approvals",
    is_flag=True,
    help="Do not poll for approval requests from your new devices (no notifications).",
)
@click.option(
    "--approval-interval",
    type=click.FloatRange(5, 3600),
    default=30.0,
    show_default=True,
    envvar="DEVICETRUST_AGENT_APPROVAL_INTERVAL",
    help="Seconds between polls for approval requests (with jitter).",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    envvar="DEVICETRUST_AGENT_SERVICE",
    metavar="URL",
    help="The sign-in service this device belongs to: while not enrolled, its login page "
    "may enroll the device with a code from IT. Repeatable; the environment variable "
    "takes a space-separated list.",
)
@click.option(
    "--user-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DEVICETRUST_AGENT_USER_SOCKET",
    help="Listen here for the per-user helpers that report user-context facts (screen "
    "lock); only graphical console users are heard. The systemd unit sets "
    "/run/devicetrust-agent/user.sock. Default: no socket.",
)
@click.pass_obj
def run(
    state_dir: Path,
    no_callback: bool,
    replay: Path | None,
    no_reports: bool,
    no_approvals: bool,
    approval_interval: float,
    services: tuple[str, ...],
    user_socket: Path | None,
) -> None:
    """Keep the local channel open for sign-ins and report posture (Ctrl-C stops it)."""
    from agent.approve import ApprovalPoller
    from agent.local_channel import ChannelState, bind_first_free, serve_in_thread
    from agent.notify import Notifier
    from agent.page_enroll import service_url
    from agent.report import ReportScheduler

    try:
        services = tuple(service_url(url) for url in services)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service") from None

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s devicetrust-agent %(levelname)s %(message)s"
    )
    keys = _keys(state_dir)
    enrollment = state.load(state_dir)
    env_ports = os.environ.get("DEVICETRUST_AGENT_PORTS")
    ports = parse_ports(env_ports) if env_ports else None
    if ports is None and enrollment is not None and enrollment.agent_ports:
        ports = tuple(enrollment.agent_ports)
    channel_state = ChannelState(
        keys,
        enrollment,
        direct_callback=not no_callback,
        services=services,
        state_dir=state_dir,
    )
    try:
        channel = bind_first_free(ports or parse_ports(None), channel_state)
    except OSError as exc:
        raise click.ClickException(f"{exc}. Is another agent already running?") from None
    logging.info("local channel listening on 127.0.0.1:%d", channel.server_address[1])
    user_server = None
    user_store = None
    if user_socket is not None:
        from agent.user_helper import UserFactsStore, UserSocketServer, console_uids

        user_store = UserFactsStore()
        try:
            user_server = UserSocketServer(
                user_socket, user_store, console_uids(lambda: _host(replay))
            )
        except OSError as exc:
            channel.server_close()
            raise click.ClickException(f"cannot listen on {user_socket}: {exc}") from None
        user_server.serve_in_thread()
        logging.info("listening for user helpers on %s", user_socket)
    stop = threading.Event()
    scheduler: ReportScheduler | None = None
    poller: ApprovalPoller | None = None

    def start_reports(current: state.Enrollment | None) -> None:
        nonlocal scheduler, poller
        if scheduler is not None:
            scheduler.shutdown()
            scheduler = None
        if poller is not None:
            poller.shutdown()
            poller = None
        if current is not None and not no_approvals:
            poller = ApprovalPoller(current, keys, Notifier(), interval=approval_interval)
            poller.start()
        channel_state.on_recheck = None
        if current is None or no_reports:
            return
        scheduler = ReportScheduler(
            current, keys, _collector(replay, user_store.get if user_store else None)
        )
        scheduler.start()
        channel_state.on_recheck = scheduler.report_now

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if enrollment is None:
        logging.warning("not enrolled yet: run devicetrust-agent enroll URL CODE")
        if services:
            logging.info("the login page of %s may enroll this device", " ".join(services))
    start_reports(enrollment)
    serve_in_thread(channel)
    path = state_dir / state.FILE
    mtime = path.stat().st_mtime if path.exists() else 0.0
    while not stop.wait(2.0):
        # Pick up an enrollment made by `devicetrust-agent enroll` while running.
        new_mtime = path.stat().st_mtime if path.exists() else 0.0
        if new_mtime != mtime:
            mtime = new_mtime
            channel_state.enrollment = state.load(state_dir)
            start_reports(channel_state.enrollment)
            logging.info("enrollment reloaded")
    if scheduler is not None:
        scheduler.shutdown()
    if poller is not None:
        poller.shutdown()
    if user_server is not None:
        user_server.close()
    channel.shutdown()
    channel.server_close()
    logging.info("stopped")


def _interval(text: str) -> float:
    """Seconds from "90", "90s", "5 min", "1h"."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)?\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r}: write a duration such as 90s, 5 min or 1 h")
    unit = {"min": 60, "m": 60, "h": 3600}.get(match.group(2) or "s", 1)
    seconds = float(match.group(1)) * unit
    if not 10 <= seconds <= 86400:
        raise click.BadParameter("the interval is between 10 s and 24 h")
    return seconds


@cli.command("user-helper")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The system agent's socket (default: $DEVICETRUST_AGENT_USER_SOCKET, "
    "else /run/devicetrust-agent/user.sock).",
)
@click.option(
    "--interval",
    default="5 min",
    show_default=True,
    help="How often to report (90s, 5 min, 1 h).",
)
@click.option("--once", is_flag=True, help="Report once and exit (status 1 if refused).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print what was sent as JSON.")
def user_helper(socket_path: Path | None, interval: str, once: bool, as_json: bool) -> None:
    """Report this user's screen lock to the system agent (run by the systemd user unit)."""
    from agent.user_helper import HelperRefused, read_own_screen_lock, send_report
    from agent.user_helper import socket_path as default_socket

    seconds = _interval(interval)
    path = socket_path or default_socket()
    logging.basicConfig(
        level=logging.INFO, format="devicetrust-agent user-helper %(levelname)s %(message)s"
    )
    if once:
        lock = read_own_screen_lock()
        try:
            send_report(path, lock)
        except HelperRefused as exc:
            raise click.ClickException(f"the agent refused the report: {exc}") from None
        except OSError as exc:
            raise click.ClickException(
                f"cannot reach the agent at {path}: {exc}. "
                "Is it running? systemctl status devicetrust-agent"
            ) from None
        _emit({"sent": lock, "socket": str(path)}, as_json, f"reported to {path}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last_error = None
    while not stop.is_set():
        try:
            send_report(path, read_own_screen_lock())
            error = None
        except (HelperRefused, OSError) as exc:
            error = str(exc)
        if error != last_error:  # say it once, not every interval
            if error:
                logging.warning("cannot report to %s: %s", path, error)
            else:
                logging.info("reporting to %s every %s s", path, int(seconds))
            last_error = error
        stop.wait(seconds)


@cli.command()
@click.option(
    "--osquery-socket",
    type=click.Path(dir_okay=False),
    default=None,
    help="osqueryd extension socket (default: the platform's usual path, if present).",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Print the facts of a recorded device (a directory with host.json) instead.",
)
def facts(osquery_socket: str | None, replay: Path | None) -> None:
    """Print this device's posture facts as JSON (what the agent reports)."""
    from agent.collectors import collect_facts
    from agent.collectors.base import Host
    from agent.collectors.osquery import OsqueryConfig

    config = OsqueryConfig(socket_path=osquery_socket) if osquery_socket else None
    host = Host.from_recording(replay) if replay else None
    click.echo(json.dumps(collect_facts(host, osquery=config), indent=2))


def main() -> None:
    """Entry point of the ``devicetrust-agent`` console script."""
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
