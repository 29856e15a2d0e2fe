"""DNS rebinding and foreign pages against the agent's ping and preflight.

A page on ``attacker.example`` that rebinds its name to 127.0.0.1 reaches the
agent with ``Host: attacker.example:PORT``; any page may send ``Origin``. Ping
and the CORS/PNA preflight must refuse both, or a web page learns that an agent
runs here and whether it is enrolled. Checked on the channel in process (one
handler, no service) and on a real enrolled agent process.
"""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from agent.local_channel import ChannelState, bind_first_free, serve_in_thread
from agent.state import Enrollment
from tests.procs import free_port, make_agent, start_service
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64e

SERVICE = "https://idp.example.test"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Private-Network": "true",
}


@pytest.fixture(scope="module")
def channel():
    """An enrolled channel served in this process; yields (port, service origin)."""
    enrollment = Enrollment(
        server_url=SERVICE, server_key=b64e(os.urandom(32)), kid="k1", origins=[SERVICE]
    )
    state = ChannelState(DeviceKeys.generate(str(uuid.uuid4())), enrollment)
    server = bind_first_free([free_port()], state)
    serve_in_thread(server)
    yield server.server_address[1], SERVICE
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def real_agent(tmp_path_factory):
    """A real service and a real enrolled agent process; yields (port, service origin)."""
    tmp = tmp_path_factory.mktemp("rebinding")
    svc = start_service(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    agent = make_agent(tmp, "rebind")
    try:
        agent.enroll(svc.url, svc.enroll_code("rita@example.com"))
        agent.start("--no-callback")
        yield agent.port, svc.url
    finally:
        agent.stop()
        svc.stop()


@pytest.fixture(params=["in_process", "real_agent"])
def target(request):
    return request.getfixturevalue("channel" if request.param == "in_process" else "real_agent")


def _refused(r: httpx.Response, code: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code
    assert "access-control-allow-origin" not in r.headers
    assert "enrolled" not in r.json()  # nothing about the agent's state leaks


@pytest.mark.parametrize(
    "host", ["attacker.example:{port}", "attacker.example", "localhost.attacker.example:{port}"]
)
def test_ping_refuses_a_rebound_host(target, host):
    port, origin = target
    url = f"http://127.0.0.1:{port}/v1/ping"
    # The control: the same request with a loopback Host is answered.
    assert httpx.get(url, headers={"Origin": origin}).json()["enrolled"] is True
    _refused(httpx.get(url, headers={"Host": host.format(port=port)}), "bad_host")
    _refused(httpx.get(url, headers={"Host": host.format(port=port), "Origin": origin}), "bad_host")


@pytest.mark.parametrize("path", ["/v1/challenge", "/v1/ping", "/v1/enroll"])
def test_preflight_refuses_a_rebound_host(target, path):
    port, origin = target
    url = f"http://127.0.0.1:{port}{path}"
    ok = httpx.options(url, headers={"Origin": origin, **PREFLIGHT})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == origin
    bad = httpx.options(
        url, headers={"Origin": origin, "Host": f"attacker.example:{port}", **PREFLIGHT}
    )
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "bad_host"
    assert "access-control-allow-origin" not in bad.headers
    assert "access-control-allow-private-network" not in bad.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "http://127.0.0.1:1"},  # another local server's page
        {"Referer": "https://attacker.example/probe.html"},
    ],
)
def test_ping_refuses_a_foreign_page(target, headers):
    port, _ = target
    r = httpx.get(f"http://127.0.0.1:{port}/v1/ping", headers=headers)
    _refused(r, "origin_not_allowed")


def test_ping_without_origin_still_answers_local_tools(target):
    """curl and the agent's own CLI send no Origin: they are not web pages."""
    port, _ = target
    r = httpx.get(f"http://127.0.0.1:{port}/v1/ping")
    assert r.status_code == 200 and r.json()["agent"] == "devicetrust"
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["localhost:{port}", "LocalHost:{port}", "127.0.0.1:{port}"])
def test_loopback_host_names_are_answered_in_any_case(channel, host):
    """A page that calls http://localhost:PORT sends that Host (browsers may keep its case)."""
    port, origin = channel
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/ping",
        headers={"Host": host.format(port=port), "Origin": origin},
    )
    assert r.status_code == 200 and r.json()["enrolled"] is True
