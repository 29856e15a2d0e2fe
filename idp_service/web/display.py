"""How untrusted text (host names, user names, SP names) is shown on pages.

A value a device or a directory sends may carry Unicode bidirectional controls
(U+202E RIGHT-TO-LEFT OVERRIDE and friends) that would reorder the page text that
follows it: ``evil\u202etxt.exe`` reads as ``evilexe.txt``. In the page body such a
value goes through the ``isolate`` filter, which wraps it in
``<bdi dir="auto">``: the browser lays it out on its own, and nothing it contains
reaches the surrounding text. Where no element can go (``<title>``, attribute
values), the ``bidi_plain`` filter removes the controls instead.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from markupsafe import Markup, escape

# Embeddings, overrides and isolates (U+202A-202E, U+2066-2069), and the marks.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def bidi_plain(value: Any) -> str:  # noqa: ANN401
    """``value`` as text without bidirectional control characters."""
    return _BIDI_CONTROLS.sub("", "" if value is None else str(value))


def isolate(value: Any) -> Markup:  # noqa: ANN401
    """``value`` escaped and isolated from the text around it (``<bdi dir="auto">``)."""
    return Markup('<bdi dir="auto">{}</bdi>').format(escape("" if value is None else value))


def install(app: Flask) -> None:
    """Register the ``isolate`` and ``bidi_plain`` template filters."""
    app.add_template_filter(isolate, "isolate")
    app.add_template_filter(bidi_plain, "bidi_plain")
