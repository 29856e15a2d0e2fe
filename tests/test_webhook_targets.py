"""Webhooks go to public addresses only, unless the operator allows private ones.

A loopback receiver stands in for every internal target (metadata services,
databases, intranet hosts): by default the dispatcher must not reach it, must
say why in the delivery log, and must connect to the very address it checked.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp_service.config import Settings
from idp_service.webhooks import dispatcher, targets
from tests.test_webhooks import _claim, _Server


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fc00::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_globally_routable_addresses_are_public(address, public):
    assert targets.is_public(address) is public


@given(st.ip_addresses(v=4))
def test_ipv4_and_its_mapped_ipv6_form_are_judged_alike(ip):
    assert targets.is_public(str(ip)) == targets.is_public(f"::ffff:{ip}")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_by_default_a_loopback_receiver_is_never_contacted(host):
    server = _Server(204)
    try:
        url = server.url.replace("127.0.0.1", host)
        outcome = dispatcher.send(_claim(url), timeout=5)
        assert outcome.status_code is None and not outcome.delivered
        assert "non-public address" in outcome.error
        assert "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE" in outcome.error  # says what to do
        assert server.hits == 0
        allowed = dispatcher.send(_claim(url), timeout=5, allow_private=True)
        assert allowed.delivered and server.hits == 1
    finally:
        server.close()


def test_the_connection_goes_to_the_checked_address(monkeypatch):
    """One resolution only: a DNS answer that changes after the check changes nothing."""
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]])
    rebound = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
    calls = []

    def resolve(host, port, *args, **kwargs):
        calls.append(host)
        return next(answers, rebound)

    connected = []

    class FakeSocket:
        def __init__(self, *args):
            pass

        def settimeout(self, t):
            pass

        def connect(self, address):
            connected.append(address)

        def close(self):
            pass

    monkeypatch.setattr(targets.socket, "getaddrinfo", resolve)
    monkeypatch.setattr(targets.socket, "socket", FakeSocket)
    sock = targets.connect("hooks.example.com", 80, 1.0)
    assert isinstance(sock, FakeSocket)
    assert calls == ["hooks.example.com"] and connected == [("93.184.216.34", 80)]


def test_one_private_answer_among_public_ones_refuses_the_host(monkeypatch):
    mixed = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443)),
    ]
    monkeypatch.setattr(targets.socket, "getaddrinfo", lambda *a, **k: mixed)
    with pytest.raises(targets.TargetRefused, match="10.0.0.5"):
        targets.connect("mixed.example.com", 443, 1.0)


def test_the_setting_is_a_clear_yes_or_no():
    assert Settings.from_env({}).webhook_allow_private is False
    assert Settings.from_env({"DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true"}).webhook_allow_private
    with pytest.raises(ValueError, match="DEVICETRUST_WEBHOOK_ALLOW_PRIVATE"):
        Settings.from_env({"DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "maybe"})


def test_the_delivery_log_says_why_a_private_target_was_refused(migrated_url, tmp_path):
    from idp_service import audit_chain
    from idp_service.storage.db import Database
    from idp_service.webhooks.dispatcher import Dispatcher
    from tests.test_webhooks import _deliveries, _queue

    audit_chain.configure(audit_chain.load_key(tmp_path / "data"))
    server = _Server(204)
    db = Database(migrated_url)
    try:
        _queue(db, 1, url=server.url)
        settings = Settings.from_env(
            {"DEVICETRUST_DATABASE_URL": migrated_url, "DEVICETRUST_WEBHOOK_RETRY_DELAYS": "60"}
        )
        assert Dispatcher(db, settings).run_once() == 1
        (delivery,) = _deliveries(db)
        assert delivery.status == "pending" and delivery.attempts == 1  # retried later
        assert "non-public address" in delivery.last_error and server.hits == 0
    finally:
        server.close()
        db.dispose()
