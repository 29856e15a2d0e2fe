"""The one normalisation of identity names: user names, e-mail addresses, group names.

Everything that compares or keys such a name goes through :func:`name_key`:
SCIM uniqueness (``users.user_name_lower``, ``groups.display_name_key``), the
look-ups of :mod:`idp_service.directory.users`, the console's admin-group check and the
CLI. The rule is Unicode NFC, then full case folding, then NFC again (case
folding can undo composition), so that ``Renée`` typed precomposed or
decomposed, ``STRASSE``/``straße`` and ``devicetrust-admins``/``devicetrust-adminſ``
(long s) each have one key. Two names with one key are one name: the second is
refused (SCIM 409 ``uniqueness``, CLI ``user_exists``).

:func:`check_identifier` also refuses a name that mixes scripts with characters
confusable across them (a Cyrillic ``а`` in an otherwise Latin name), using the
Unicode confusables data of ``confusable-homoglyphs``: such a name would render
like another name while keying differently.
"""

from __future__ import annotations

import unicodedata

from confusable_homoglyphs import confusables


class ConfusableName(ValueError):
    """A name that can't be an identity: it mixes scripts with look-alike characters,
    or holds control characters (which render as nothing, or reorder the text)."""


def name_key(value: str) -> str:
    """The comparison key of a user name, e-mail address or group name."""
    folded = unicodedata.normalize("NFC", value).casefold()
    return unicodedata.normalize("NFC", folded)


# Keys the service gives rows that no name may take: a deleted user's tombstone
# (``~deleted~<id>``, scim/storage.py) and a name parked by migration 0016
# (``~collision~<id>``). A name with such a key would block that deletion (a 409).
DELETED_PREFIX = "~deleted~"
RESERVED_KEY_PREFIXES = (DELETED_PREFIX, "~collision~")


def reserved_reason(value: str, what: str) -> str | None:
    """Why ``value`` cannot be a ``what`` (its key is one the service reserves for its own
    rows), or None when it can."""
    if name_key(value).startswith(RESERVED_KEY_PREFIXES):
        return f"{what} cannot begin with {' or '.join(RESERVED_KEY_PREFIXES)}"
    return None


def names_equal(a: str, b: str) -> bool:
    """True when two names are the same name under :func:`name_key`."""
    return name_key(a) == name_key(b)


# Control (Cc) and format (Cf: bidi overrides, zero-width joiners, ...) characters
# make two names that render alike, or text that renders in another order.
_INVISIBLE = {"Cc", "Cf"}


def check_identifier(value: str) -> None:
    """Refuse (``ConfusableName``) a name that holds control or format characters, or
    that mixes scripts with confusable characters."""
    if any(unicodedata.category(ch) in _INVISIBLE for ch in value):
        raise ConfusableName(f"{value!r} holds control or invisible formatting characters")
    if confusables.is_dangerous(unicodedata.normalize("NFC", value)):
        raise ConfusableName(f"{value!r} mixes scripts with look-alike characters")


__all__ = [
    "DELETED_PREFIX",
    "RESERVED_KEY_PREFIXES",
    "ConfusableName",
    "check_identifier",
    "name_key",
    "names_equal",
    "reserved_reason",
]
