"""The error tree: every stable code is explained in docs/troubleshooting.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from microtopic import errors
from microtopic.api.errors import HTTP_ERRORS

TROUBLESHOOTING = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


def error_codes() -> set[str]:
    """Return the `code` of every error class in `microtopic.errors`."""
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.MicrotopicError)
    ]
    return {error_class.code for error_class in classes}


def documented_codes() -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", TROUBLESHOOTING.read_text(encoding="utf-8")))


@pytest.mark.parametrize("code", sorted(error_codes()))
def test_error_code_is_in_troubleshooting(code: str) -> None:
    assert code in documented_codes()


@pytest.mark.parametrize("code", sorted(code for _, code, _ in HTTP_ERRORS.values()))
def test_http_error_code_is_in_troubleshooting(code: str) -> None:
    assert code in documented_codes()


def test_every_error_class_is_found() -> None:
    codes = error_codes()

    assert {"no_key_available", "storage_error", "unexpected_response"} <= codes
    assert len(codes) >= 30


def test_quoted_id_keeps_short_ids() -> None:
    assert errors.quoted_id("abc") == "'abc'"
    assert errors.quoted_id("a" * 64) == repr("a" * 64)


def test_quoted_id_shortens_long_ids() -> None:
    quoted = errors.quoted_id("a" * 65)

    assert quoted == repr("a" * 64) + "... (65 characters)"
