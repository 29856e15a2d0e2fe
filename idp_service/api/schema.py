"""A small JSON Schema (2020-12 subset) validator for admin-API input, and schema helpers.

The same schemas describe the API in its OpenAPI document and check what
clients send, so the two cannot drift. Supported keywords: ``type`` (one or a
list), ``properties``, ``required``, ``additionalProperties`` (false or a
schema), ``items``, ``maxItems``, ``enum``, ``minLength``, ``maxLength``,
``pattern``, ``minimum``, ``maximum``. Every string must also be storable: no
NUL characters and no lone surrogates (PostgreSQL and UTF-8 refuse both).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class SchemaError(ValueError):
    """A value does not match its schema; ``path`` says where (``$.a.b[0]``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def storable(text: str) -> bool:
    """True if ``text`` can be stored in SQLite and PostgreSQL as it is."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate(schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Raise :class:`SchemaError` unless ``value`` matches ``schema``."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, n) for n in names):
            raise SchemaError(path, f"must be {' or '.join(names)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(path, f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if not storable(value):
            raise SchemaError(path, "contains characters that cannot be stored")
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(path, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not _regex(schema["pattern"]).search(value):
            raise SchemaError(path, f"must match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"must be at most {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise SchemaError(f"{path}.{key}", "is required")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if not storable(key):
                raise SchemaError(path, "a key contains characters that cannot be stored")
            if key in props:
                validate(props[key], item, f"{path}.{key}")
            elif extra is False:
                raise SchemaError(f"{path}.{key}", "is not a known field")
            elif isinstance(extra, dict):
                validate(extra, item, f"{path}.{key}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"must have at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(schema["items"], item, f"{path}[{i}]")


# -- helpers that build schemas ------------------------------------------------------------


def string(max_length: int = 256, *, min_length: int = 0, nullable: bool = False) -> dict:
    """A string schema (``["string", "null"]`` when nullable)."""
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string"}
    if min_length:
        schema["minLength"] = min_length
    schema["maxLength"] = max_length
    return schema


def obj(
    properties: dict[str, dict], required: tuple[str, ...] = (), *, closed: bool = True
) -> dict:
    """An object schema; ``closed`` forbids unknown fields."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: dict) -> dict:
    """An array schema."""
    return {"type": "array", "items": items}


def page(items: dict) -> dict:
    """A page of a list: ``{"items": [...], "next_cursor": str|null}``."""
    return obj(
        {"items": array(items), "next_cursor": string(512, nullable=True)},
        ("items", "next_cursor"),
    )


REASON = string(2000, min_length=1)
TIMESTAMP = {"type": "string"}
TIMESTAMP_OR_NULL = {"type": ["string", "null"]}
ERROR = obj(
    {
        "error": obj(
            {"code": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"}},
            ("code", "message"),
        )
    },
    ("error",),
)
