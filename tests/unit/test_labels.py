"""Label size limits follow containerd 1.6: key plus value at most 4096 bytes."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, labels

pytestmark = pytest.mark.unit


def test_validate_accepts_exactly_the_maximum_size() -> None:
    labels.validate("k" * 96, "v" * 4000)


def test_validate_rejects_one_byte_over_the_maximum() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        labels.validate("k" * 96, "v" * 4001)


def test_validate_accepts_empty_key_and_value() -> None:
    labels.validate("", "")


def test_validate_error_message_shows_only_the_head_of_the_key() -> None:
    key = "containerd.io/gc.ref.content.very.long.key"
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        labels.validate(key, "x" * 4096)
    assert str(excinfo.value) == (
        "label key and value greater than maximum size (4096 bytes), key: containerd"
    )


def test_validate_counts_utf8_bytes_not_characters() -> None:
    # 2048 two-byte characters are exactly 4096 bytes; one more ASCII byte is over.
    labels.validate("", "é" * 2048)
    with pytest.raises(errdefs.InvalidArgument):
        labels.validate("k", "é" * 2048)


def test_validate_all_checks_every_pair() -> None:
    labels.validate_all({"a": "1", "b": "2"})
    with pytest.raises(errdefs.InvalidArgument, match="key: big"):
        labels.validate_all({"a": "1", "big": "x" * 5000})


@pytest.mark.parametrize("empty", [None, {}])
def test_validate_all_accepts_no_labels(empty: dict[str, str] | None) -> None:
    labels.validate_all(empty)
