"""The alphabet and normalisation shared by enrollment codes (``enroll.py``) and approval
codes (``approve.py``): codes people read from one screen and type on another."""

from __future__ import annotations

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def normalize_code(code: str) -> str:
    """Upper-case and drop separators, so ``abcd-efgh`` and ``ABCD EFGH`` match."""
    return "".join(ch for ch in code.upper() if ch.isalnum())
