"""Image references: Docker's normalisation, as distribution/reference and
containerd's ParseDockerRef do it, and the familiar form Docker prints."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs
from pycontainerd.reference import (
    Reference,
    familiarize,
    normalize_docker_ref,
    parse,
    parse_docker_ref,
    parse_normalized_named,
)

pytestmark = pytest.mark.unit

HEX = "a" * 64
DIGEST = "sha256:" + HEX


@pytest.mark.parametrize(
    ("ref", "full", "short"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("me/app:v1", "docker.io/me/app:v1", "me/app:v1"),
        ("index.docker.io/me/app", "docker.io/me/app:latest", "me/app:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/app:x", "localhost:5000/app:x", "localhost:5000/app:x"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest"),
        ("ghcr.io/o/r/app:1", "ghcr.io/o/r/app:1", "ghcr.io/o/r/app:1"),
        # An upper-case first component can only be a host: paths are lower case.
        ("Registry/app", "Registry/app:latest", "Registry/app:latest"),
        # Only an official image's single component loses library/.
        ("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        # A digest wins over a tag.
        (f"app:1@{DIGEST}", f"docker.io/library/app@{DIGEST}", f"app@{DIGEST}"),
        (f"ghcr.io/o/app@{DIGEST}", f"ghcr.io/o/app@{DIGEST}", f"ghcr.io/o/app@{DIGEST}"),
    ],
)
def test_names_as_typed_normalise_and_familiarise_as_docker_does(
    ref: str, full: str, short: str
) -> None:
    assert normalize_docker_ref(ref) == full
    assert normalize_docker_ref(full) == full
    assert familiarize(ref) == familiarize(full) == short
    assert normalize_docker_ref(short) == full


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "invalid reference format"),
        ("Busybox", r"repository name \(library/Busybox\) must be lowercase"),
        ("me/App:v1", r"repository name \(me/App\) must be lowercase"),
        ("localhost:5000/App", r"repository name \(App\) must be lowercase"),
        ("bad ref", "invalid reference format"),
        ("a:b:c", "invalid reference format"),
        ("app:", "invalid reference format"),
        ("app:.x", "invalid reference format"),
        ("app:" + "t" * 129, "invalid reference format"),
        ("-app", "invalid reference format"),
        ("a__-b", "invalid reference format"),
        ("ghcr.io/", "invalid reference format"),
        ("app@sha256:zz", "invalid reference format"),
        ("app@sha256:" + "A" * 64, "invalid checksum digest format"),
        ("app@sha256:" + "a" * 63, "invalid checksum digest length"),
        ("app@md5:" + "0" * 32, "unsupported digest algorithm"),
        (HEX, "cannot specify 64-byte hexadecimal strings"),
        ("me/" + "a" * 253, "repository name must not be more than 255 characters"),
    ],
)
def test_bad_references_are_refused_with_distributions_words(ref: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        normalize_docker_ref(ref)


def test_the_longest_path_is_255_characters_without_the_domain() -> None:
    ref = parse_docker_ref("registry.example.com:5000/me/" + "a" * 252)
    assert (ref.domain, len(ref.path)) == ("registry.example.com:5000", 255)


def test_parse_reads_the_grammar_and_adds_nothing() -> None:
    assert parse("busybox") == Reference("", "busybox")
    assert parse("me/app:v1") == Reference("me", "app", "v1")
    full = parse(f"localhost:5000/a/b:x@{DIGEST}")
    assert full == Reference("localhost:5000", "a/b", "x", DIGEST)
    with pytest.raises(errdefs.InvalidArgument, match=r"^repository name must be lowercase$"):
        parse("Me/App")
    with pytest.raises(errdefs.InvalidArgument, match="must have at least one component"):
        parse("")


def test_normalised_names_keep_what_was_given() -> None:
    assert parse_normalized_named("busybox") == Reference("docker.io", "library/busybox")
    both = parse_normalized_named(f"busybox:1@{DIGEST}")
    assert (both.tag, both.digest) == ("1", DIGEST)
    assert str(both) == f"docker.io/library/busybox:1@{DIGEST}"


def test_a_reference_names_its_parts() -> None:
    ref = parse_docker_ref("busybox")
    assert ref == Reference("docker.io", "library/busybox", "latest", "")
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar_name == "busybox"
    assert ref.familiar_string == "busybox:latest"
    assert str(ref) == "docker.io/library/busybox:latest"
    assert parse_docker_ref("ghcr.io/o/app").familiar_name == "ghcr.io/o/app"
