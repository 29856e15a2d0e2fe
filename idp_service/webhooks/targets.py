"""Where a webhook may be sent: public addresses only, unless the operator allows more.

A webhook URL is written by an admin, but the service is what connects to it,
from inside the company's network. Without a guard, a URL naming
``http://169.254.169.254/…`` (a cloud metadata service), ``http://127.0.0.1:5432``
or an internal host would make the service a probe of places its admins cannot
reach themselves (server-side request forgery). So, by default, the dispatcher
connects only to globally routable addresses:

* the host is resolved *once*, and every address it resolves to must be public
  (one private answer among public ones refuses the lot, so a DNS server cannot
  mix them);
* the connection goes to the address that was checked, never to a second
  resolution (no DNS-rebinding window); TLS still verifies the URL's host name;
* redirects are never followed (``dispatcher.py``).

``DEVICETRUST_WEBHOOK_ALLOW_PRIVATE=true`` lifts the restriction, for receivers
on the company's own network. When an HTTP(S) proxy is configured for the
service (``https_proxy``/``http_proxy``), the connection goes to the proxy, and
the proxy's egress policy decides instead (docs/events.md).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from functools import cache
from typing import Any


class TargetRefused(OSError):
    """The URL's host resolves to an address webhooks may not be sent to."""


# IPv6 ranges whose addresses carry an IPv4 address in their last 32 bits: a
# packet to one of them reaches (or is translated to) that IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, local use only
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (RFC 4291)
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for: IPv4-mapped, IPv4-compatible,
    IPv4-translated, NAT64 (well-known prefix), 6to4 (the relay) or Teredo (its server
    and its client). Empty when the address embeds none."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client): the client is the last 32 bits XOR 0xffffffff
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE or ip in _IPV4_TRANSLATED:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def _global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local,
    shared, reserved, multicast or unspecified).

    An IPv6 address that embeds an IPv4 address (:func:`embedded_ipv4`) is judged by
    the IPv4 address it reaches, so ``64:ff9b::7f00:1`` or ``2002:a00:1::`` is no way
    round the guard; the local-use NAT64 prefix ``64:ff9b:1::/48`` (RFC 8215), whose
    IPv4 position depends on the local prefix length, is never public.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        embedded = embedded_ipv4(ip)
        if embedded:
            return all(_global(v4) for v4 in embedded)
    return _global(ip)


def connect(
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    *,
    allow_private: bool = False,
) -> socket.socket:
    """A TCP connection to ``host:port``, made only to addresses that were checked."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not allow_private:
        refused = sorted({str(i[4][0]) for i in infos if not is_public(str(i[4][0]))})
        if refused:
            raise TargetRefused(
                f"{host} resolves to a non-public address ({', '.join(refused[:3])}); set "
                "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE=true to send webhooks inside your network"
            )
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"{host} has no address")


def _guarded(
    base: type[http.client.HTTPConnection], allow_private: bool
) -> type[http.client.HTTPConnection]:
    class Guarded(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            if getattr(self, "_tunnel_host", None):  # to a proxy: its policy decides
                super().connect()
                return
            sock = connect(
                self.host,
                self.port,
                self.timeout,
                self.source_address,
                allow_private=allow_private,
            )
            if isinstance(self, http.client.HTTPSConnection):
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
            self.sock = sock

    return Guarded


@cache
def opener(allow_private: bool) -> urllib.request.OpenerDirector:
    """A urllib opener whose connections go through :func:`connect`; no redirects."""
    http_conn = _guarded(http.client.HTTPConnection, allow_private)
    https_conn = _guarded(http.client.HTTPSConnection, allow_private)

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        """A 3xx answer is a failure (Standard Webhooks): update the endpoint's URL."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
            return None

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:  # noqa: ANN401
            if req.has_proxy():  # the request goes to the proxy, whose policy decides
                return super().http_open(req)
            return self.do_open(http_conn, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:  # noqa: ANN401
            # the handler's own TLS context (None: the default one), as urllib passes it
            return self.do_open(https_conn, req, context=getattr(self, "_context", None))

    return urllib.request.build_opener(NoRedirects(), HTTPHandler(), HTTPSHandler())
