"""Admin-API input validation with jsonschema (Draft 2020-12), and schema helpers.

The same schemas describe the API in its OpenAPI document and check what
clients send, so the two cannot drift. Each schema is compiled once into a
:class:`jsonschema.Draft202012Validator` (cached by :func:`compiled`); the
first error becomes a :class:`SchemaError` whose path and message keep the
API's wording (``body.name: is required``). Every string must also be
storable: no NUL characters and no lone surrogates (PostgreSQL and UTF-8
refuse both), in keys and values alike.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


class SchemaError(ValueError):
    """A value does not match its schema; ``path`` says where (``$.a.b[0]``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def storable(text: str) -> bool:
    """True if ``text`` can be stored in SQLite and PostgreSQL as it is."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# id(schema) -> (schema, validator); the schema is kept so its id is never reused.
_COMPILED: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


def compiled(schema: dict[str, Any]) -> Draft202012Validator:
    """The validator of ``schema``, compiled on first use and kept."""
    entry = _COMPILED.get(id(schema))
    if entry is None or entry[0] is not schema:
        Draft202012Validator.check_schema(schema)
        entry = _COMPILED[id(schema)] = (schema, Draft202012Validator(schema))
    return entry[1]


def _where(base: str, parts: Any) -> str:
    path = base
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _error(base: str, err: ValidationError) -> SchemaError:
    path = _where(base, err.absolute_path)
    rule, want, value = err.validator, err.validator_value, err.instance
    if rule == "type":
        names = [want] if isinstance(want, str) else list(want)
        return SchemaError(path, f"must be {' or '.join(names)}")
    if rule == "enum":
        return SchemaError(path, f"must be one of {', '.join(map(str, want))}")
    if rule == "minLength":
        return SchemaError(path, f"must be at least {want} characters")
    if rule == "maxLength":
        return SchemaError(path, f"must be at most {want} characters")
    if rule == "pattern":
        return SchemaError(path, f"must match {want}")
    if rule == "minimum":
        return SchemaError(path, f"must be at least {want}")
    if rule == "maximum":
        return SchemaError(path, f"must be at most {want}")
    if rule == "maxItems":
        return SchemaError(path, f"must have at most {want} items")
    if rule == "required":
        missing = next((k for k in want if k not in value), "?")
        return SchemaError(f"{path}.{missing}", "is required")
    if rule == "additionalProperties" and want is False:
        known = err.schema.get("properties", {})
        extra = next((k for k in value if k not in known), "?")
        return SchemaError(f"{path}.{extra}", "is not a known field")
    return SchemaError(path, err.message)


def _unstorable(value: Any, path: str) -> SchemaError | None:
    if isinstance(value, str):
        return (
            None
            if storable(value)
            else SchemaError(path, "contains characters that cannot be stored")
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                return SchemaError(path, "a key contains characters that cannot be stored")
            found = _unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unstorable(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def validate(schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Raise :class:`SchemaError` unless ``value`` matches ``schema`` and is storable."""
    unstorable = _unstorable(value, path)
    if unstorable is not None:
        raise unstorable
    err = next(compiled(schema).iter_errors(value), None)
    if err is not None:
        raise _error(path, err)


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
