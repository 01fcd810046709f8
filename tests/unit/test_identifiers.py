"""Identifiers follow containerd's rules exactly, including its error messages."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, identifiers

pytestmark = pytest.mark.unit

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@pytest.mark.parametrize(
    "ident",
    [
        "default",
        "k8s.io",
        "moby",
        "a",
        "0",
        "Foo",
        "UPPER-case_Mixed.123",
        "foo.bar-baz_qux",
        "1-2-3",
        "a" * 76,
        "sha256-" + "0" * 64,
    ],
)
def test_validate_accepts_containerd_identifiers(ident: str) -> None:
    identifiers.validate(ident)


@pytest.mark.parametrize(
    "ident",
    [
        "-leading",
        ".leading",
        "_leading",
        "trailing-",
        "trailing.",
        "double--dash",
        "double..dot",
        "mixed.-separators",
        "has space",
        "slash/inside",
        "..",
        "colon:x",
        "new\nline",
        "ok\n",
        "ünïcode",
    ],
)
def test_validate_rejects_bad_characters_and_separators(ident: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        identifiers.validate(ident)
    assert f"must match {PATTERN}" in str(excinfo.value)


def test_validate_error_message_matches_containerd() -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        identifiers.validate("Bad_Name!")
    assert str(excinfo.value) == f'identifier "Bad_Name!" must match {PATTERN}'


def test_validate_quotes_control_characters_like_go() -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        identifiers.validate('a"b\tc\x01')
    assert str(excinfo.value).startswith('identifier "a\\"b\\tc\\x01" must match')


def test_validate_rejects_empty() -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"^identifier must not be empty$"):
        identifiers.validate("")


def test_validate_accepts_76_and_rejects_77_characters() -> None:
    identifiers.validate("a" * 76)
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        identifiers.validate("a" * 77)
    assert str(excinfo.value) == (
        f'identifier "{"a" * 77}" greater than maximum length (76 characters)'
    )


def test_validate_checks_length_before_pattern() -> None:
    # containerd reports the length first even when the pattern also fails.
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum length"):
        identifiers.validate("-" * 80)


def test_validate_measures_length_in_bytes() -> None:
    # 38 two-byte characters are 76 bytes; 39 are 78 and too long, as in Go.
    with pytest.raises(errdefs.InvalidArgument, match="must match"):
        identifiers.validate("é" * 38)
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum length"):
        identifiers.validate("é" * 39)


def test_invalid_identifier_travels_as_invalid_argument() -> None:
    with pytest.raises(errdefs.ContainerdError) as excinfo:
        identifiers.validate("bad name")
    assert isinstance(excinfo.value, errdefs.InvalidArgument)
