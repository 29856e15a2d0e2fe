"""Real headless Chromium (Debian's package) driven by Playwright, for browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def available() -> bool:
    """True when Debian's chromium is installed (make test installs it as root)."""
    return shutil.which(CHROMIUM) is not None


@contextmanager
def chromium() -> Iterator[object]:
    """A fresh browser; yields a Playwright ``Browser``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
