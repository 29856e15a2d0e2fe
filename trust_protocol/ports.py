"""The fixed list of loopback ports of the agent's local channel.

The agent binds the first free one; the login page tries them in order. Both
sides must agree, so the list is part of the protocol. A deployment may
override it on both sides (``DEVICETRUST_AGENT_PORTS``).
"""

DEFAULT_AGENT_PORTS: tuple[int, ...] = (47621, 37123, 52117, 22841, 60391, 29517)


def parse_ports(
    text: str | None, default: tuple[int, ...] = DEFAULT_AGENT_PORTS
) -> tuple[int, ...]:
    """Parse a space- or comma-separated port list; empty means ``default``."""
    if not text or not text.strip():
        return default
    ports = tuple(int(p) for p in text.replace(",", " ").split())
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"bad port list: {text!r}")
    return ports
