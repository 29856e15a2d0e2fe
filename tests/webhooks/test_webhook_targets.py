"""Webhooks go to public addresses only, unless the operator allows private ones.

A loopback receiver stands in for every internal target (metadata services,
databases, intranet hosts): by default the dispatcher must not reach it, must
say why in the delivery log, and must connect to the very address it checked.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp_service.platform.config import Settings
from idp_service.webhooks import dispatcher, targets
from tests.webhooks.test_webhooks import _claim, _Server


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


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::127.0.0.1",  # NAT64, well-known prefix
        "64:ff9b::a00:1",
        "64:ff9b::169.254.169.254",
        "64:ff9b:1::8.8.8.8",  # NAT64, local-use prefix: never public
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "::ffff:0:127.0.0.1",  # IPv4-translated
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "2001:0:a00:1:8000:63bf:f7f7:fefe",  # Teredo, server 10.0.0.1
    ],
)
def test_an_ipv4_address_embedded_in_ipv6_is_judged_as_ipv4(address):
    assert targets.is_public(address) is False


@pytest.mark.parametrize(
    "address", ["64:ff9b::8.8.8.8", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"]
)
def test_a_public_ipv4_address_embedded_in_ipv6_stays_public(address):
    assert targets.is_public(address) is True


_PRIVATE_V4 = st.one_of(
    *(
        st.ip_addresses(network=network)
        for network in (
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "0.0.0.0/8",
        )
    )
)


def _embeddings(v4: ipaddress.IPv4Address, high: int, server: int) -> list[str]:
    """Every IPv6 form that reaches ``v4``; ``high`` and ``server`` fill the free bits."""
    n = int(v4)
    return [
        f"::ffff:{v4}",  # IPv4-mapped
        f"::{v4}",  # IPv4-compatible
        f"::ffff:0:{v4}",  # IPv4-translated
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),  # NAT64 /96
        str(ipaddress.IPv6Address((0x0064FF9B0001 << 80) | (high >> 48 << 32) | n)),  # /48
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | (high & (1 << 80) - 1))),
        str(  # Teredo: server in bits 32-63, client obfuscated in the last 32 bits
            ipaddress.IPv6Address(
                (0x20010000 << 96) | (server << 64) | ((high & 0xFFFFFFFF) << 32) | (n ^ 0xFFFFFFFF)
            )
        ),
        str(  # Teredo whose server is the private address
            ipaddress.IPv6Address(
                (0x20010000 << 96) | (n << 64) | ((high & 0xFFFFFFFF) << 32) | (server ^ 0xFFFFFFFF)
            )
        ),
    ]


@given(
    _PRIVATE_V4,
    st.integers(min_value=0, max_value=(1 << 80) - 1),
    st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_every_ipv6_embedding_of_a_private_ipv4_address_is_refused(v4, high, server):
    assert not targets.is_public(str(v4))
    for address in _embeddings(v4, high, server):
        assert not targets.is_public(address), address


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
    from idp_service.platform import audit_chain
    from idp_service.platform.db import Database
    from idp_service.webhooks.dispatcher import Dispatcher
    from tests.webhooks.test_webhooks import _deliveries, _queue

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
