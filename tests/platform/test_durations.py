"""Durations as people write them (trust_protocol/durations.py): examples and a round trip."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp_service.platform.config import parse_duration as setting_seconds
from tests.procs import ROOT, base_env
from trust_protocol.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (1, "1 s"),
        (90, "90 s"),
        (60, "1 min"),
        (300, "5 min"),
        (150, "2 min 30 s"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (86400, "24 h"),
        (7 * 86400, "7 d"),
        (30 * 86400, "30 d"),
        (86400 + 6 * 3600, "1 d 6 h"),
        (-300, "-5 min"),
    ],
)
def test_format(seconds, text):
    assert format_duration(dt.timedelta(seconds=seconds)) == text
    assert format_duration(seconds) == text


def test_format_none_and_fractions():
    assert format_duration(None) == ""
    assert format_duration(0.5) == "0.5 s"
    assert format_duration(dt.timedelta(seconds=89.6)) == "90 s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("90s", 90),
        ("15m", 900),
        ("5 min", 300),
        ("24 h", 86400),
        ("7d", 7 * 86400),
        ("1d6h", 30 * 3600),
        ("1 d 6 h", 30 * 3600),
        (" 2 H 30 MIN ", 9000),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "5 ms", "5 weeks", "-5 min", "1.5h", "5 min x", "d5"])
def test_parse_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_settings_accept_what_the_console_prints():
    assert setting_seconds("1 d 6 h", "X") == 30 * 3600
    assert setting_seconds("30d", "X") == 30 * 86400
    with pytest.raises(ValueError, match="X must be a positive duration"):
        setting_seconds("0", "X")
    with pytest.raises(ValueError, match="X must be a positive duration"):
        setting_seconds("soon", "X")


@given(st.integers(min_value=0, max_value=10 * 365 * 86400))
def test_round_trip(seconds):
    text = format_duration(dt.timedelta(seconds=seconds))
    assert parse_duration(text) == dt.timedelta(seconds=seconds)
    assert "day" not in text and ":" not in text


def _devicetrust(url: str, tmp_path, *args: str) -> str:
    env = base_env(DEVICETRUST_DATABASE_URL=url, DEVICETRUST_DATA_DIR=str(tmp_path / "d"))
    done = subprocess.run(
        [sys.executable, "-m", "idp_service", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_commands_print_durations_as_people_write_them(sqlite_url, tmp_path):
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    out = _devicetrust(
        sqlite_url, tmp_path, "enroll-code", "create", "--user", "d@example.com", "--create-user"
    )
    assert "(in 24 h); on the device run:" in out
    out = _devicetrust(sqlite_url, tmp_path, "admin", "bootstrap")
    assert ", in 1 h):" in out
    out = _devicetrust(
        sqlite_url,
        tmp_path,
        "exemptions",
        "add",
        "--check",
        "*",
        "--user",
        "d@example.com",
        "--days",
        "7",
        "--reason",
        "trip",
    )
    assert "(for 7 d)" in out
    assert "day," not in out and "0:00:00" not in out
