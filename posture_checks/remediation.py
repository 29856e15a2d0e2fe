"""Remediation text for a check and a device: Markdown with ``{{ fact.path }}`` filled in.

Values come from the device, so they are untrusted: each is HTML-escaped and
its Markdown punctuation backslash-escaped before it is put into the text,
so a hostile hostname cannot inject links or markup into the login page.
A placeholder with no value reads "unknown". Only dotted fact paths (and
``vars.NAME``) are substituted; there is no template logic to abuse.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from posture_checks.model import Check

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """Make ``text`` inert inside Markdown (and the HTML it becomes)."""
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=True))


def _lookup(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def render_remediation(
    check: Check,
    facts: Mapping[str, Any],
    *,
    platform: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The check's remediation for this device's platform, placeholders filled in."""
    os_section = facts.get("os") if isinstance(facts, Mapping) else None
    family = os_section.get("family") if isinstance(os_section, Mapping) else None
    text = check.remediation_for(platform or (family if isinstance(family, str) else None))
    scope = dict(facts) if isinstance(facts, Mapping) else {}
    scope["vars"] = {**check.variables, **(variables or {})}

    def fill(match: re.Match[str]) -> str:
        value = _lookup(scope, match.group(1))
        if value is None:
            return "unknown"
        if not isinstance(value, str):
            value = json.dumps(value)
        return escape_markdown(value[:200])

    return _PLACEHOLDER.sub(fill, text)
