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


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local,
    shared, reserved, multicast or unspecified; IPv4-mapped IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
        refused = sorted({info[4][0] for info in infos if not is_public(info[4][0])})
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


def _guarded(base: type[http.client.HTTPConnection], allow_private: bool) -> type:
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
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(NoRedirects(), HTTPHandler(), HTTPSHandler())
