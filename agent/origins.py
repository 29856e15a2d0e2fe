"""Which web origins the agent deals with: https, or plain http on a loopback host.

A web page may ask this agent to enroll only from such an origin
(``agent/page_enroll.py``), and the configured service URL (``--service``,
``service_url`` in the configuration, ``agent/config.py``) must be one. Pure
functions of strings, below both.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def page_origin_ok(origin: str) -> bool:
    """True for an origin a page may enroll from: https, or http on a loopback host."""
    parts = urlsplit(origin)
    if f"{parts.scheme}://{parts.netloc}" != origin or not parts.hostname or "@" in origin:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def service_url(url: str) -> str:
    """Check and normalise a configured service URL (``--service``); raise ValueError."""
    parts = urlsplit(url.strip())
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    url = urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))
    if parts.query or parts.fragment or not page_origin_ok(f"{scheme}://{netloc}"):
        raise ValueError(
            f"{url!r}: the service URL must be https:// (or http:// on a loopback host), "
            "without query or fragment"
        )
    return url
