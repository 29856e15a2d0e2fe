"""The pinned server key (``server_key_fingerprint``) against real service and agent processes.

Two genuine services run on loopback: ours, and another with its own key (what
a wrong DNS answer or a hijacked address would reach). An agent configured with
our key's fingerprint enrolls with ours, and refuses the other before it sends
it anything: from the command line, from a login page, and at start-up when
already enrolled under another key.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from idp_service.platform.models import Device
from tests.procs import make_agent, start_service
from trust_protocol.device_keys import fingerprint
from trust_protocol.encoding import b64d


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pin")
    ours = start_service(tmp_path_factory.mktemp("ours"), f"sqlite:///{tmp / 'ours.sqlite'}")
    other = start_service(tmp_path_factory.mktemp("other"), f"sqlite:///{tmp / 'other.sqlite'}")
    yield ours, other
    other.stop()
    ours.stop()


def key_fingerprint(service):
    info = httpx.get(service.url + "/agent/v1/server").json()
    return fingerprint(b64d(info["server_key"], length=32))


def device_count(service):
    engine = create_engine(service.env["DEVICETRUST_DATABASE_URL"])
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Device)).scalar_one()
    engine.dispose()
    return n


def pin_in_config(agent, fp, url=None):
    path = agent.env["DEVICETRUST_AGENT_CONFIG"]
    lines = [f'server_key_fingerprint = "{fp}"']
    if url:
        lines.append(f'service_url = "{url}"')
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_server_fingerprint_shows_what_the_service_presents(services, tmp_path):
    ours, other = services
    agent = make_agent(tmp_path, "fp")
    shown = agent.cli_json("server-fingerprint", ours.url)
    assert shown["server_key_fingerprint"] == key_fingerprint(ours)
    assert shown["matches_pin"] is None
    pin_in_config(agent, key_fingerprint(ours))
    assert agent.cli_json("server-fingerprint", other.url)["matches_pin"] is False
    text = agent.cli("server-fingerprint", other.url).stdout
    assert "MISMATCH" in text and key_fingerprint(ours) in text


def test_enrollment_with_the_pinned_key_succeeds(services, tmp_path):
    ours, _ = services
    agent = make_agent(tmp_path, "match")
    # The pin from the environment, the URL from the configuration file: `enroll CODE`.
    pin_in_config(agent, "SHA256:" + "A" * 43, url=ours.url)
    agent.env["DEVICETRUST_AGENT_SERVER_KEY_FINGERPRINT"] = key_fingerprint(ours)
    result = agent.cli_json("enroll", ours.enroll_code("pin-ok@example.com"))
    assert result["server_url"] == ours.url and result["user"] == "pin-ok@example.com"
    assert (agent.state_dir / "enrollment.json").exists()
    status = agent.cli_json("status")
    assert status["problem"] is None
    assert status["server_key_fingerprint"] == key_fingerprint(ours)
    assert status["config"]["sources"]["server_key_fingerprint"] == "environment"


def test_enrollment_with_another_key_is_refused_before_anything_is_sent(services, tmp_path):
    ours, other = services
    agent = make_agent(tmp_path, "mismatch")
    config_path = pin_in_config(agent, key_fingerprint(ours))
    before = device_count(other)
    r = agent.cli("enroll", other.url, other.enroll_code("pin-bad@example.com"), check=False)
    assert r.returncode == 1
    assert "server_key_mismatch" in r.stderr
    assert f"presents server key {key_fingerprint(other)}" in r.stderr
    assert f"pins {key_fingerprint(ours)}" in r.stderr
    assert f"server_key_fingerprint in file {config_path}" in r.stderr  # where to fix it
    assert not (agent.state_dir / "enrollment.json").exists()
    assert device_count(other) == before


def test_an_enrolled_agent_under_another_key_will_not_start(services, tmp_path):
    ours, other = services
    agent = make_agent(tmp_path, "enrolled")
    agent.enroll(ours.url, ours.enroll_code("pin-run@example.com"))
    pin_in_config(agent, key_fingerprint(other))  # IT now pins another key
    r = agent.cli("run", "--no-reports", check=False)
    assert r.returncode == 78, r.stderr
    assert "this device is enrolled, but the service at" in r.stderr
    assert "enroll again" in r.stderr
    assert "PROBLEM" in agent.cli("status").stdout
    # With the right pin it starts and answers.
    pin_in_config(agent, key_fingerprint(ours))
    agent.start("--no-reports", "--no-approvals")
    try:
        ping = httpx.get(f"http://127.0.0.1:{agent.port}/v1/ping").json()
        assert ping["enrolled"] is True
    finally:
        agent.stop()


def register_challenge(service):
    browser = httpx.Client(base_url=service.url, follow_redirects=False)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    r = browser.post(f"/login/{txn}/register-challenge", json={"mode": "code"})
    assert r.status_code == 200, r.text
    return r.json()["challenge"]


def test_a_login_page_cannot_enroll_an_agent_whose_pin_its_service_fails(services, tmp_path):
    ours, _ = services
    agent = make_agent(tmp_path, "page")
    pin_in_config(agent, "SHA256:" + "A" * 43, url=ours.url)  # service_url from the file
    agent.start("--no-reports", "--no-callback", "--no-approvals")
    try:
        before = device_count(ours)
        body = {"challenge": register_challenge(ours), "code": ours.enroll_code("pg@example.com")}
        r = httpx.post(
            f"http://127.0.0.1:{agent.port}/v1/enroll",
            content=json.dumps(body).encode(),
            headers={"Origin": ours.url},
            timeout=30,
        )
        assert r.status_code == 502 and r.json()["error"]["code"] == "server_key_mismatch"
        assert body["code"] not in r.text
        time.sleep(0.2)
        assert not (agent.state_dir / "enrollment.json").exists()
        assert device_count(ours) == before
        assert "refused to enroll" in agent.log() and body["code"] not in agent.log()
    finally:
        agent.stop()


def enroll_here(agent, origin):
    r = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        content=b'{"challenge": "x.y"}',
        headers={"Origin": origin},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_enrolled"
    return r.json()["error"]["enroll_here"]


def wait_for(predicate, timeout=25.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_running_agent_picks_up_configuration_that_arrives_later(services, tmp_path):
    ours, other = services
    agent = make_agent(tmp_path, "later")
    agent.start("--no-reports", "--no-approvals")
    try:
        assert enroll_here(agent, ours.url) is False  # no service_url yet
        pin_in_config(agent, key_fingerprint(ours), url=ours.url)  # the profile arrives
        wait_for(lambda: enroll_here(agent, ours.url) is True)
        assert "configuration changed: service_url, server_key_fingerprint" in agent.log()
        # A broken change is reported once and the previous configuration stays.
        with open(agent.env["DEVICETRUST_AGENT_CONFIG"], "w") as fh:
            fh.write('service_url = "http://not-https.example"\n')
        wait_for(lambda: "the previous one stays" in agent.log())
        assert enroll_here(agent, ours.url) is True
        assert agent.proc.poll() is None
    finally:
        agent.stop()


def test_a_running_enrolled_agent_stops_when_the_pin_changes_under_it(services, tmp_path):
    ours, other = services
    agent = make_agent(tmp_path, "repin")
    agent.enroll(ours.url, ours.enroll_code("repin@example.com"))
    pin_in_config(agent, key_fingerprint(ours))
    agent.start("--no-reports", "--no-approvals")
    try:
        pin_in_config(agent, key_fingerprint(other))
        agent.proc.wait(30)
        assert agent.proc.returncode == 78
        assert f"pins {key_fingerprint(other)}" in agent.log()
    finally:
        agent.stop()
