"""Re-authentication tokens, agent half: keep the current one, present it, take its successor.

The service half is ``idp_service/upstream/reauth.py`` (protocol §17). The token is
kept in ``reauth.json`` in the state directory, next to the keys and like them
0600. It is presented inside the signed ``data`` of an ``authenticate`` answer
(``{"reauth": TOKEN}``), so it is worth nothing without this device's signing
key. The successor arrives sealed to this device's box key: in the reply to the
agent's own callback, or, when the browser's copy of the answer won the race,
from ``GET /agent/v1/reauth/<challenge id>``. It is opened, checked (server
signature by the pinned key, addressed to this device, issued in this sign-in)
and stored; the presented token is kept until then, so a lost reply is
recovered by the service's grace rule on the next sign-in.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent import http_client
from agent.state import Enrollment
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError
from trust_protocol.reauth import TOKEN_PATTERN, open_grant

log = logging.getLogger(__name__)

FILE = "reauth.json"
PICKUP_TRIES = 3
PICKUP_DELAY = 0.5


def current(state_dir: Path | None, now: float | None = None) -> str | None:
    """The stored token if there is one and it has not expired."""
    if state_dir is None:
        return None
    try:
        data = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    token, expires = data.get("token"), data.get("expires_at")
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        return None
    if not isinstance(expires, int) or (time.time() if now is None else now) >= expires:
        return None
    return token


def _save(state_dir: Path, data: dict[str, Any]) -> None:
    path = state_dir / FILE
    tmp = state_dir / (FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data) + "\n")
    os.replace(tmp, path)


def accept(
    state_dir: Path,
    sealed_b64: object,
    *,
    keys: DeviceKeys,
    enrollment: Enrollment,
    challenge_id: str,
    now: float | None = None,
) -> bool:
    """Open a sealed grant issued in the sign-in of ``challenge_id`` and store its token."""
    try:
        sealed = b64d(sealed_b64, field="reauth")
        grant = open_grant(
            sealed,
            keys.box_key,
            enrollment.verify_key,
            keys.device_id,
            now=time.time() if now is None else now,
        )
    except ProtocolError as exc:
        log.warning("re-authentication grant refused: %s", exc.code)
        return False
    if grant.challenge != challenge_id:
        log.warning("re-authentication grant refused: issued in another sign-in")
        return False
    _save(
        state_dir,
        {
            "token": grant.token,
            "family": grant.family,
            "issued_at": grant.issued_at,
            "expires_at": grant.expires_at,
            "challenge": grant.challenge,
        },
    )
    log.info("re-authentication token renewed (family %s)", grant.family[:8])
    return True


def collect(
    state_dir: Path,
    reply: dict[str, Any] | None,
    *,
    keys: DeviceKeys,
    enrollment: Enrollment,
    challenge_id: str,
) -> bool:
    """Take the successor from the callback's ``reply``, or else pick it up by challenge id."""
    if reply is not None and "reauth" in reply:
        return accept(
            state_dir, reply["reauth"], keys=keys, enrollment=enrollment, challenge_id=challenge_id
        )
    if reply is not None:
        return False  # the callback verified this answer and no grant was issued
    url = f"{enrollment.server_url}/agent/v1/reauth/{challenge_id}"
    for attempt in range(PICKUP_TRIES):
        try:
            found = http_client.request("GET", url, timeout=10)
        except http_client.ServerError as exc:
            if exc.code != "reauth_none":
                return False
            if attempt + 1 < PICKUP_TRIES:
                time.sleep(PICKUP_DELAY)
            continue
        return accept(
            state_dir,
            found.get("grant"),
            keys=keys,
            enrollment=enrollment,
            challenge_id=challenge_id,
        )
    return False
