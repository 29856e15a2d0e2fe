"""The ``devicetrust-agent`` command: run, status, id, enroll, config, facts, update and
user-helper.

``run`` keeps the local channel open for the login page. ``enroll URL CODE``
registers this device with a service using a one-time code from IT. ``id``
shows the device id and key fingerprints (to compare with the admin console).
``config`` shows the effective configuration (``agent/config.py``: file, MDM
profile or policy, environment, flags) and where each value came from;
``server-fingerprint URL`` shows the key a service presents, to pin it.
``user-helper`` runs in each user's session and reports that user's screen lock
to the system agent (``agent/user_helper.py``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent import __version__, state
from agent.config import EX_CONFIG, KEYS, AgentConfig, ConfigError, PinMismatch, check_pin
from agent.keys import KeyPermissionError, check_permissions, load_or_create
from agent.paths import default_state_dir
from trust_protocol.cli_output import emit as _emit
from trust_protocol.ports import parse_ports

log = logging.getLogger(__name__)
STOP_EVENT = "devicetrust.stop"  # ctx.meta key: a threading.Event that ends `run`
CONFIG_RECHECK_TICKS = 5  # `run` re-reads its configuration every 5 x 2 s


def _values(cfg: AgentConfig) -> tuple[object, ...]:
    return tuple(getattr(cfg, k) for k in KEYS)


class ConfigProblem(click.ClickException):
    """A configuration error or a pin mismatch: exit status 78 (EX_CONFIG).

    Service managers are told not to restart on it (systemd
    ``RestartPreventExitStatus=78``, launchd and the Windows service wrapper
    likewise): restarting cannot fix a configuration.
    """

    exit_code = EX_CONFIG


def _config(**flags: object) -> AgentConfig:
    """The effective configuration, with this command's flags on top."""
    from agent import config

    root = click.get_current_context().find_root().params
    flags = {"server_key_fingerprint": root.get("server_key_fingerprint"), **flags}
    try:
        return config.load(flags, config_path=root.get("config_path"))
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None


def _check_enrollment_pin(enrollment: state.Enrollment | None, cfg: AgentConfig) -> None:
    """An enrolled agent whose pinned key the configuration does not pin refuses to run."""
    if enrollment is None:
        return
    try:
        check_pin(enrollment.server_key, enrollment.server_url, cfg)
    except PinMismatch as exc:
        raise ConfigProblem(
            f"this device is enrolled, but {exc.message}\n{exc.hint}\n"
            "If the service really has a new key, devices must enroll again: move the state "
            "directory away and enroll."
        ) from None


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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The configuration file (default: /etc/devicetrust/agent.toml, or the macOS and "
    "Windows locations; also DEVICETRUST_AGENT_CONFIG).",
)
@click.option(
    "--server-key-fingerprint",
    metavar="SHA256:...",
    default=None,
    help="Pin the service's key: refuse a service that presents another one "
    "(overrides the configuration).",
)
@click.version_option(__version__, message="devicetrust-agent %(version)s")
@click.pass_context
def cli(
    ctx: click.Context,
    state_dir: Path | None,
    config_path: Path | None,
    server_key_fingerprint: str | None,
) -> None:
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
@click.argument("args", nargs=-1, metavar="[URL] CODE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def enroll(state_dir: Path, args: tuple[str, ...], as_json: bool) -> None:
    """Enroll this device with the service at URL, using the one-time CODE from IT.

    Without URL, the configured service_url is used (`devicetrust-agent config`).
    """
    from agent.enroll import EnrollError
    from agent.enroll import enroll as do_enroll

    if len(args) not in (1, 2):
        raise click.UsageError(
            "give the one-time CODE from IT, and the service URL first if "
            "none is configured: devicetrust-agent enroll [URL] CODE"
        )
    cfg = _config()
    if len(args) == 2:
        url, code = args
    elif cfg.service_url:
        url, code = cfg.service_url, args[0]
    else:
        raise click.UsageError(
            "no service URL is configured: devicetrust-agent enroll URL CODE "
            "(or set service_url, see `devicetrust-agent config`)"
        )
    _keys(state_dir)
    try:
        result = do_enroll(state_dir, url, code, cfg)
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
    if enrollment is not None:
        from trust_protocol.device_keys import fingerprint

        data["server_key_fingerprint"] = fingerprint(enrollment.verify_key.encode())
    try:
        cfg = _config()
        data["config"] = cfg.to_json()
        _check_enrollment_pin(enrollment, cfg)
        data["problem"] = None
    except ConfigProblem as exc:
        data["problem"] = exc.message
    if enrollment is None:
        text = "not enrolled. Run: devicetrust-agent enroll URL CODE"
    else:
        text = (
            f"enrolled with {enrollment.server_url} as {enrollment.user} ({enrollment.state})\n"
            f"server key: {data['server_key_fingerprint']}"
        )
    if data["problem"]:
        text += f"\nPROBLEM: {data['problem']}"
    from agent import update

    data["update"] = update.summary(state_dir, enrollment)
    kid = data["update"]["update_kid"]
    updates = f"pinned update key {kid}" if kid else "off (no update key pinned)"
    _emit(
        data,
        as_json,
        f"{text}\nkeys: {data['keys']}\nself-update: {updates}\nstate directory: {state_dir}",
    )


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
    _check_enrollment_pin(enrollment, _config())
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
    "takes a space-separated list. Default: the configured service_url.",
)
@click.option(
    "--ports",
    default=None,
    metavar="PORTS",
    help="Local channel ports, space- or comma-separated (default: the configured "
    "agent_ports, else what the service published at enrollment, else the protocol's).",
)
@click.option(
    "--report-interval",
    default=None,
    metavar="DURATION",
    help='Report posture at least this often, e.g. "15 min" (default: as the service asks).',
)
@click.option(
    "--no-updates",
    is_flag=True,
    envvar="DEVICETRUST_AGENT_NO_UPDATES",
    help="Do not check for signed self-updates.",
)
@click.option(
    "--update-interval",
    default="6h",
    show_default=True,
    envvar="DEVICETRUST_AGENT_UPDATE_INTERVAL",
    help="How often to check for a signed update (with jitter): 6h, 30m, 1d.",
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
    ports: str | None,
    report_interval: str | None,
    no_updates: bool,
    update_interval: str,
    user_socket: Path | None,
) -> None:
    """Keep the local channel open for sign-ins and report posture (Ctrl-C stops it)."""
    from agent.approve import ApprovalPoller
    from agent.local_channel import ChannelState, bind_first_free, serve_in_thread
    from agent.notify import Notifier
    from agent.origins import service_url
    from agent.report import ReportScheduler

    try:
        services = tuple(service_url(url) for url in services)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service") from None
    flags = {"agent_ports": ports, "report_interval": report_interval}
    cfg = _config(**flags)
    services_flag = services  # --service / DEVICETRUST_AGENT_SERVICE win over service_url
    if not services and cfg.service_url:
        services = (cfg.service_url,)
    from agent import update

    try:
        update_every = update.parse_interval(update_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--update-interval") from None

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s devicetrust-agent %(levelname)s %(message)s"
    )
    for warning in cfg.warnings:
        logging.warning("configuration: %s", warning)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per job run
    keys = _keys(state_dir)
    update.confirm_started(state_dir)
    enrollment = state.load(state_dir)
    _check_enrollment_pin(enrollment, cfg)
    channel_ports = cfg.agent_ports
    if channel_ports is None and enrollment is not None and enrollment.agent_ports:
        channel_ports = tuple(enrollment.agent_ports)
    channel_state = ChannelState(
        keys,
        enrollment,
        direct_callback=not no_callback,
        services=services,
        state_dir=state_dir,
        config=cfg,
    )
    try:
        channel = bind_first_free(channel_ports or parse_ports(None), channel_state)
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
    # A host that runs the loop in a thread (the Windows service) passes its own event.
    stop: threading.Event = click.get_current_context().meta.get(STOP_EVENT) or threading.Event()
    exit_code = 0
    scheduler: ReportScheduler | None = None
    poller: ApprovalPoller | None = None
    updater: update.UpdateScheduler | None = None

    def start_reports(current: state.Enrollment | None) -> None:
        nonlocal scheduler, poller, updater
        if scheduler is not None:
            scheduler.shutdown()
            scheduler = None
        if poller is not None:
            poller.shutdown()
            poller = None
        if updater is not None:
            updater.shutdown()
            updater = None
        if not no_updates:
            updater = update.UpdateScheduler(
                state_dir, current, keys.device_id, interval=update_every
            )
            updater.start()
        if current is not None and not no_approvals:
            poller = ApprovalPoller(current, keys, Notifier(), interval=approval_interval)
            poller.start()
        channel_state.on_recheck = None
        if current is None or no_reports:
            return
        scheduler = ReportScheduler(
            current,
            keys,
            _collector(replay, user_store.get if user_store else None),
            ceiling=cfg.report_interval,
            state_dir=state_dir,
        )
        scheduler.start()
        channel_state.on_recheck = scheduler.report_now

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
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
    ticks = 0
    config_error = ""
    restart: dict[str, Any] | None = None
    while not stop.wait(2.0):
        # An update installed itself (schedule or `update apply`): restart into it.
        restart = update.restart_wanted(state_dir)
        if restart is not None:
            break
        ticks += 1
        if ticks % CONFIG_RECHECK_TICKS == 0:
            # A profile, policy or file that arrives or changes while running.
            try:
                fresh = _config(**flags)
                config_error = ""
            except ConfigProblem as exc:
                if exc.message != config_error:
                    logging.error("configuration: %s (the previous one stays)", exc.message)
                config_error = exc.message
                fresh = cfg
            if _values(fresh) != _values(cfg):
                changed = [k for k in KEYS if getattr(fresh, k) != getattr(cfg, k)]
                logging.info("configuration changed: %s", ", ".join(changed))
                if fresh.agent_ports != cfg.agent_ports:
                    logging.warning("agent_ports changed: restart the agent to listen on them")
                cfg = fresh
                channel_state.config = cfg
                if not services_flag:
                    channel_state.services = (cfg.service_url,) if cfg.service_url else ()
                if scheduler is not None:
                    scheduler.set_ceiling(cfg.report_interval)
                try:
                    _check_enrollment_pin(channel_state.enrollment, cfg)
                except ConfigProblem as exc:
                    logging.error("%s", exc.message)
                    exit_code = EX_CONFIG
                    break
        # Pick up an enrollment made by `devicetrust-agent enroll` while running.
        new_mtime = path.stat().st_mtime if path.exists() else 0.0
        if new_mtime != mtime:
            mtime = new_mtime
            channel_state.enrollment = state.load(state_dir)
            try:
                _check_enrollment_pin(channel_state.enrollment, cfg)
            except ConfigProblem as exc:
                logging.error("%s", exc.message)
                channel_state.enrollment = None
                exit_code = EX_CONFIG
                break
            start_reports(channel_state.enrollment)
            logging.info("enrollment reloaded")
    if scheduler is not None:
        scheduler.shutdown()
    if poller is not None:
        poller.shutdown()
    if updater is not None:
        updater.shutdown()
    if user_server is not None:
        user_server.close()
    port = channel.server_address[1]
    channel.shutdown()
    channel.server_close()
    if restart is not None:
        logging.info("restarting into agent %s", restart["to"])
        try:
            update.restart_into(state_dir, restart, port)  # does not return
        except update.UpdateError as exc:
            raise click.ClickException(f"{exc.message} ({exc.code})") from None
    logging.info("stopped")
    if exit_code:
        sys.exit(exit_code)


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_config(as_json: bool) -> None:
    """Show the effective configuration, where each value came from, and what was read."""
    cfg = _config()
    data = cfg.to_json()
    lines = []
    for key in ("service_url", "server_key_fingerprint", "agent_ports", "report_interval"):
        value = data[key]
        if key == "agent_ports" and value:
            value = " ".join(map(str, value))
        if key == "report_interval" and value:
            from trust_protocol.durations import format_duration

            value = format_duration(value)
        lines.append(f"{key:24} {value if value is not None else '-':40} ({cfg.origin(key)})")
    lines.append("read: " + "; ".join(cfg.searched))
    lines += [f"warning: {w}" for w in cfg.warnings]
    _emit(data, as_json, "\n".join(lines))


@cli.command("server-fingerprint")
@click.argument("url", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def server_fingerprint(url: str | None, as_json: bool) -> None:
    """Show the key fingerprint the service at URL presents (to pin as server_key_fingerprint).

    Compare it with what the service's operators publish before you pin it.
    """
    from agent.enroll import EnrollError, fetch_server
    from agent.origins import service_url
    from trust_protocol.device_keys import fingerprint
    from trust_protocol.encoding import b64d

    cfg = _config()
    url = url or cfg.service_url
    if not url:
        raise click.UsageError("give the service URL (none is configured)")
    try:
        url = service_url(url)
        info = fetch_server(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    except EnrollError as exc:
        raise click.ClickException(f"{exc.message} ({exc.code})") from None
    presented = fingerprint(b64d(info["server_key"], length=32, field="server_key"))
    data = {
        "service_url": url,
        "server_key_fingerprint": presented,
        "kid": info.get("kid", ""),
        "pinned": cfg.server_key_fingerprint,
        "matches_pin": None
        if not cfg.server_key_fingerprint
        else presented == cfg.server_key_fingerprint,
    }
    text = f"{url} presents server key {presented}"
    if data["matches_pin"] is not None:
        text += (
            "\nthat is the pinned key"
            if data["matches_pin"]
            else (
                f"\nMISMATCH: this device pins {cfg.server_key_fingerprint} "
                f"({cfg.origin('server_key_fingerprint')})"
            )
        )
    _emit(data, as_json, text)


@cli.group("update")
def update_group() -> None:
    """Signed self-update: check for and install the build the service's manifest offers."""


_update_key_option = click.option(
    "--update-key",
    envvar="DEVICETRUST_AGENT_UPDATE_KEY",
    default=None,
    help="The update public key to pin (default: the one pinned at enrollment).",
)
_manifest_url_option = click.option(
    "--manifest-url",
    envvar="DEVICETRUST_AGENT_UPDATE_URL",
    default=None,
    help="Where the manifest is (default: the enrolled service's /agent/v1/update-manifest).",
)
_platform_option = click.option(
    "--platform", default=None, help="The manifest platform to take (default: detected)."
)


def _check(  # noqa: ANN202 - update.Check
    state_dir: Path, update_key: str | None, manifest_url: str | None, platform: str | None
):
    from agent import update

    keys = _keys(state_dir)
    try:
        return update.check(
            state_dir,
            state.load(state_dir),
            keys.device_id,
            update_key=update_key,
            manifest_url=manifest_url,
            platform=platform,
        )
    except update.UpdateError as exc:
        raise click.ClickException(f"update refused ({exc.code}): {exc.message}") from None


@update_group.command("check")
@_update_key_option
@_manifest_url_option
@_platform_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def update_check(
    state_dir: Path,
    update_key: str | None,
    manifest_url: str | None,
    platform: str | None,
    as_json: bool,
) -> None:
    """Fetch and verify the update manifest; say what this device would install."""
    result = _check(state_dir, update_key, manifest_url, platform)
    data = result.to_json()
    if data["action"] == "install":
        text = f"update available: {data['version']} (running {data['running']}, {data['reason']})"
    else:
        text = f"no update to install: {data['reason']} (running {data['running']})"
    _emit(data, as_json, text)


@update_group.command("apply")
@_update_key_option
@_manifest_url_option
@_platform_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def update_apply(
    state_dir: Path,
    update_key: str | None,
    manifest_url: str | None,
    platform: str | None,
    as_json: bool,
) -> None:
    """Install the update the manifest offers; a running agent restarts into it."""
    from agent import update

    result = _check(state_dir, update_key, manifest_url, platform)
    if result.decision.action != "install":
        _emit(result.to_json(), as_json, f"nothing to install: {result.decision.reason}")
        return
    try:
        applied = update.apply(state_dir, result)
    except update.UpdateError as exc:
        raise click.ClickException(f"update refused ({exc.code}): {exc.message}") from None
    _emit(
        applied.to_json(),
        as_json,
        f"installed {applied.version}; a running agent restarts into it within seconds",
    )


@update_group.command("watch", hidden=True)
@click.option("--pid", type=int, required=True)
@click.option("--port", type=int, required=True)
@click.option("--expect", required=True)
@click.option("--timeout", type=float, default=30.0)
@click.option("--restart-argv", default=None)
@click.option("--managed", is_flag=True)
@click.pass_obj
def update_watch(
    state_dir: Path,
    pid: int,
    port: int,
    expect: str,
    timeout: float,
    restart_argv: str | None,
    managed: bool,
) -> None:
    """Internal: health-check a restarted agent and roll back if it fails."""
    from agent import update

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s devicetrust-agent %(levelname)s %(message)s"
    )
    argv = json.loads(restart_argv) if restart_argv else None
    ok = update.watch(
        state_dir,
        pid=pid,
        port=port,
        expect=expect,
        timeout=timeout,
        restart_argv=argv,
        managed=managed,
    )
    sys.exit(0 if ok else 1)


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


class ClickRunner:
    """Runs ``devicetrust-agent run`` in this process, ended by the service's stop event
    (the Windows service's :class:`~agent.windows_service.AgentRunner`)."""

    def __init__(self, args: tuple[str, ...] = ("run",)) -> None:
        self.args = args

    def run(self, stop: threading.Event) -> int:
        """The ``run`` command's exit status (78 for a configuration problem)."""
        try:
            with cli.make_context("devicetrust-agent", list(self.args)) as ctx:
                ctx.meta[STOP_EVENT] = stop
                cli.invoke(ctx)
        except click.ClickException as exc:
            log.error("%s", exc.format_message())
            return exc.exit_code
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except Exception:
            log.exception("the agent failed")
            return 1
        return 0


@cli.group("service")
def service_group() -> None:
    """The Windows service: what the MSI registers and runs (Windows only)."""


@service_group.command("run")
def service_run() -> None:
    """Run as the Windows service (the service control manager starts this)."""
    from agent import windows_service

    windows_service.require_windows()
    windows_service.dispatch(ClickRunner())


@service_group.command("configure")
@click.option("--service-url", default="", help="Write service_url into agent.toml.")
@click.option(
    "--server-key-fingerprint", "fingerprint", default="", help="Write the key pin into agent.toml."
)
def service_configure(service_url: str, fingerprint: str) -> None:
    """Settings, recovery actions and folder permissions (the MSI runs this, as SYSTEM)."""
    from agent import windows_service

    windows_service.require_windows()
    settings = {"service_url": service_url, "server_key_fingerprint": fingerprint}
    try:
        steps = windows_service.configure_installed(settings)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    for step in steps:
        click.echo(step)


def main() -> None:
    """Entry point of the ``devicetrust-agent`` console script."""
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
