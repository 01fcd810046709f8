"""Chain IDs follow the OCI image spec, as containerd's identity.ChainID does."""

from __future__ import annotations

import hashlib

import pytest

from pycontainerd import errdefs
from pycontainerd.images.identity import chain_id, chain_ids

pytestmark = pytest.mark.unit

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_chain_id_of_one_layer_is_its_diff_id() -> None:
    assert chain_id([A]) == A


def test_chain_id_hashes_parent_chain_space_diff_id() -> None:
    ab = _sha(f"{A} {B}")
    assert chain_ids([A, B, C]) == [A, ab, _sha(f"{ab} {C}")]
    assert chain_id([A, B, C]) == _sha(f"{ab} {C}")


def test_chain_id_of_no_layers_is_empty() -> None:
    assert chain_id([]) == ""
    assert chain_ids([]) == []


def test_chain_ids_reject_a_malformed_diff_id() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="diff id 'sha256:nothex'"):
        chain_ids([A, "sha256:nothex"])
