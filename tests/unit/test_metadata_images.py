"""Image records in the metadata store: containerd 1.6's rules and messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs, namespaces
from pycontainerd.images import Descriptor, Image
from pycontainerd.metadata import Metadata
from tests.unit._meta import run

pytestmark = pytest.mark.unit

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "a" * 64


def target(**kw: object) -> Descriptor:
    values: dict[str, object] = {"media_type": MANIFEST, "digest": DIGEST, "size": 1234}
    values.update(kw)
    return Descriptor(**values)  # type: ignore[arg-type]


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Metadata]:
    m = Metadata.open(tmp_path)
    try:
        with namespaces.namespace("default"):
            yield m
    finally:
        m.close()


def test_create_get_round_trip(md: Metadata) -> None:
    created = run(
        md.images.create(
            Image(
                "docker.io/library/a:1",
                target(annotations={"an": "x", "e": ""}),
                {"l": "v", "e": ""},
            )
        )
    )
    assert created.labels == {"l": "v"} and created.target.annotations == {"an": "x"}
    assert md.images.get("docker.io/library/a:1") == created


def test_duplicate_and_missing(md: Metadata) -> None:
    run(md.images.create(Image("a", target())))
    with pytest.raises(errdefs.AlreadyExists, match=r'^image "a"$'):
        run(md.images.create(Image("a", target())))
    for call in (
        lambda: md.images.get("nope"),
        lambda: run(md.images.update(Image("nope", target()))),
        lambda: run(md.images.delete("nope")),
    ):
        with pytest.raises(errdefs.NotFound, match=r'^image "nope"$'):
            call()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image("", target()), "image name must not be empty"),
        (Image("a", target(digest="")), 'Target.Digest "" invalid: invalid checksum digest format'),
        (
            Image("a", target(digest="sha256:abc")),
            'Target.Digest "sha256:abc" invalid: invalid checksum digest length',
        ),
        (
            Image("a", target(digest="md5:" + "a" * 32)),
            'Target.Digest "md5:' + "a" * 32 + '" invalid: unsupported digest algorithm',
        ),
        (
            Image("a", target(digest="sha256:" + "A" * 64)),
            "invalid checksum digest format",
        ),
        (Image("a", target(size=0)), "Target.Size must be greater than zero"),
        (Image("a", target(media_type="")), "Target.MediaType must be set"),
        (Image("a", target(), {"k": "v" * 5000}), "image.Labels: label key and value greater"),
    ],
)
def test_create_validates_like_containerd(md: Metadata, image: Image, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        run(md.images.create(image))
    assert message in info.value.message


def test_update_by_field_paths(md: Metadata) -> None:
    run(md.images.create(Image("a", target(annotations={"x": "1"}), {"l": "v"})))
    updated = run(
        md.images.update(
            Image("a", target(annotations={"y": "2"}), {"z": "1"}),
            "labels.z",
            "labels.l",
            "annotations.y",
        )
    )
    assert updated.labels == {"z": "1"}
    assert updated.target.annotations == {"x": "1", "y": "2"}
    other = target(digest="sha256:" + "b" * 64, size=99)
    retargeted = run(md.images.update(Image("a", other), "target"))
    assert retargeted.target == other and retargeted.labels == {"z": "1"}
    with pytest.raises(errdefs.InvalidArgument, match='cannot update "name" field on image "a"'):
        run(md.images.update(Image("a", target()), "name"))


def test_update_without_paths_replaces_the_record(md: Metadata) -> None:
    created = run(md.images.create(Image("a", target(), {"l": "v"})))
    replaced = run(md.images.update(Image("a", target(size=7))))
    assert replaced.labels == {} and replaced.target.size == 7
    assert replaced.created_at == created.created_at
    with pytest.raises(errdefs.InvalidArgument, match=r"Target.Digest"):
        run(md.images.update(Image("a", Descriptor("", "", 0))))


def test_list_sorted_and_filtered(md: Metadata) -> None:
    index = "application/vnd.oci.image.index.v1+json"
    run(md.images.create(Image("b", target(media_type=index), {"k": "1"})))
    run(md.images.create(Image("a", target(annotations={"org.x": "y"}))))
    names = lambda *fs: [i.name for i in run(md.images.list(*fs))]  # noqa: E731
    assert names() == ["a", "b"]
    assert names(f"target.mediatype=={index}") == ["b"]
    assert names(f"target.digest=={DIGEST}") == ["a", "b"]
    assert names("labels.k==1") == ["b"]
    assert names('annotations."org.x"==y') == ["a"]
    assert names("name~=^a") == ["a"]
    with pytest.raises(errdefs.InvalidArgument, match="parse error"):
        run(md.images.list("name=="))


def test_delete_marks_dirty_and_namespaces_are_separate(md: Metadata) -> None:
    run(md.images.create(Image("a", target())))
    with namespaces.namespace("other"):
        assert run(md.images.list()) == []
    before = md.db.dirty
    run(md.images.delete("a"))
    assert md.db.dirty == before + 1
    assert run(md.images.list()) == []
