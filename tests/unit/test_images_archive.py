"""Image archives: entry names, caps, Docker conversion, names, layout records."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from pycontainerd import errdefs
from pycontainerd.archive.compression import Compression
from pycontainerd.images import Descriptor
from pycontainerd.images import archive_export as ae
from pycontainerd.images import archive_import as ai
from pycontainerd.images import mediatypes as mt
from pycontainerd.images import rootfs as rf
from pycontainerd.images.manifest import MAX_MANIFEST_SIZE, parse_config, parse_manifest
from pycontainerd.platforms import Platform

pytestmark = pytest.mark.unit

HEX = "a" * 64
DIGEST = "sha256:" + HEX


# -- entry names -----------------------------------------------------------------------


def test_blob_entries_are_named_by_digest() -> None:
    assert ai.classify(f"blobs/sha256/{HEX}") == (f"blobs/sha256/{HEX}", ai.EntryKind.BLOB, DIGEST)
    assert ai.classify(f"./blobs/sha256/{HEX}")[2] == DIGEST


@pytest.mark.parametrize(
    "name",
    [
        "blobs/sha256/notahexdigest",
        "blobs/sha256/" + "a" * 63,
        "blobs/md5/" + "a" * 32,
        f"blobs/sha256/{HEX}/extra",
        "blobs/evil",
    ],
)
def test_blob_entries_with_other_names_are_refused(name: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="blob"):
        ai.classify(name)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "."])
def test_entries_escaping_the_archive_are_refused(name: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="escapes"):
        ai.classify(name)


def test_small_entries_and_docker_files_are_classified() -> None:
    assert ai.classify("oci-layout")[1] is ai.EntryKind.LAYOUT
    assert ai.classify("./index.json")[1] is ai.EntryKind.INDEX
    assert ai.classify("manifest.json")[1] is ai.EntryKind.DOCKER_MANIFEST
    assert ai.classify("repositories")[1] is ai.EntryKind.SKIP
    assert ai.classify("abc/json")[1] is ai.EntryKind.SKIP
    assert ai.classify("abc/layer.tar") == ("abc/layer.tar", ai.EntryKind.FILE, "")


def test_read_capped_refuses_oversized_entries_without_reading() -> None:
    stream = io.BytesIO(b"")
    with pytest.raises(errdefs.InvalidArgument, match="limit"):
        ai.read_capped(stream, MAX_MANIFEST_SIZE + 1, "index.json")
    with pytest.raises(errdefs.InvalidArgument, match="ends inside"):
        ai.read_capped(io.BytesIO(b"{}"), 10, "index.json")


# -- what an archive holds -----------------------------------------------------------------


def test_oci_layout_needs_version_1_0_0_and_an_index() -> None:
    contents = ai.ArchiveContents(layout=b'{"imageLayoutVersion":"1.0.0"}')
    assert contents.is_oci()
    with pytest.raises(errdefs.InvalidArgument, match=r"missing index\.json"):
        contents.oci_index()
    contents.index = b'{"schemaVersion":2,"manifests":[{"digest":"nope","size":1}]}'
    with pytest.raises(errdefs.InvalidArgument, match="digest"):
        contents.oci_index()
    with pytest.raises(errdefs.InvalidArgument, match=r"unsupported OCI version 2\.0\.0"):
        ai.ArchiveContents(layout=b'{"imageLayoutVersion":"2.0.0"}').is_oci()


def test_neither_format_is_unrecognized() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="unrecognized image format"):
        ai.ArchiveContents().docker_images()


@pytest.mark.parametrize(
    "doc",
    [b"{}", b'[{"Config": 1}]', b'[{"Config": "c.json", "Layers": [1]}]', b"[", b"[42]"],
)
def test_malformed_docker_manifests_are_refused(doc: bytes) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        ai.ArchiveContents(docker_manifest=doc).docker_images()


def test_docker_files_resolve_through_symlinks_and_missing_ones_are_not_found() -> None:
    contents = ai.ArchiveContents()
    contents.files["a/layer.tar"] = (Descriptor("", DIGEST, 5), Compression.UNCOMPRESSED)
    contents.add_symlink("b/layer.tar", "../a/layer.tar")
    assert contents.file("b/layer.tar", "layer")[0].digest == DIGEST
    with pytest.raises(errdefs.NotFound, match=r"layer 'c/layer\.tar' not found"):
        contents.file("c/layer.tar", "layer")


def test_docker_manifest_is_written_as_containerd_writes_it() -> None:
    config = Descriptor(mt.DOCKER_CONFIG, DIGEST, 10)
    layer = Descriptor(ai.layer_media_type(Compression.UNCOMPRESSED), "sha256:" + "b" * 64, 20)
    data = ai.docker_manifest(config, [layer])
    assert data == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"'
        + DIGEST.encode()
        + b'","size":10},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar",'
        b'"digest":"sha256:' + b"b" * 64 + b'","size":20}]}'
    )
    assert ai.layer_media_type(Compression.GZIP) == mt.DOCKER_LAYER_GZIP


def test_tagged_entries_carry_both_name_annotations() -> None:
    desc = Descriptor(mt.DOCKER_MANIFEST, DIGEST, 1, platform=Platform("linux", "amd64"))
    (entry,) = ai.tagged(desc, ["busybox:1.36"])
    assert entry.annotations == {
        ai.ANNOTATION_IMAGE_NAME: "docker.io/library/busybox:1.36",
        ai.ANNOTATION_REF_NAME: "1.36",
    }
    assert entry.platform == Platform("linux", "amd64")
    assert list(ai.tagged(desc, [])) == [desc]


# -- names -----------------------------------------------------------------------------------


def test_a_repo_tag_that_is_no_reference_is_refused_in_containerds_words() -> None:
    desc = Descriptor(mt.DOCKER_MANIFEST, DIGEST, 1)
    with pytest.raises(
        errdefs.InvalidArgument,
        match=r'^normalize image ref "Busybox:1": invalid reference format: repository name',
    ):
        list(ai.tagged(desc, ["Busybox:1"]))


def test_oci_ref_name_is_the_tag_or_digest() -> None:
    assert ai.oci_ref_name("docker.io/library/busybox:latest") == "latest"
    assert ai.oci_ref_name(f"docker.io/library/busybox@{DIGEST}") == f"@{DIGEST}"
    assert ai.oci_ref_name("busybox:latest") == "busybox:latest"


def test_ctr_import_name_translators() -> None:
    add, only = ai.add_ref_prefix("import-2024"), ai.filter_ref_prefix("foo/bar")
    assert add("latest") == "import-2024:latest"
    assert add("docker.io/x/y:1") == "docker.io/x/y:1"
    assert only("latest") == "foo/bar:latest"
    assert only("foo/bar:1") == "foo/bar:1"
    assert only("foo/barbaz:1") == ""
    assert only("other/x:1") == ""
    assert ai.digest_translator("foo/bar")(DIGEST) == f"foo/bar@{DIGEST}"
    annotations = {ai.ANNOTATION_REF_NAME: "v1"}
    assert ai.image_name(annotations, add) == "import-2024:v1"
    assert ai.image_name({**annotations, ai.ANNOTATION_IMAGE_NAME: "x:y"}, add) == "x:y"
    assert ai.image_name({}, add) == ""


# -- export layout ------------------------------------------------------------------------


def test_layout_records_are_sorted_unique_and_complete() -> None:
    manifest = Descriptor(mt.OCI_MANIFEST, DIGEST, 3)
    target = ae.named(manifest, "docker.io/library/app:1")
    blobs = {
        DIGEST: manifest,
        "sha256:" + "0" * 64: Descriptor(mt.OCI_CONFIG, "sha256:" + "0" * 64, 2),
    }
    m = parse_manifest(
        json.dumps(
            {"config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2}}
        ).encode()
    )
    records = ae.layout_records(
        [target, target], blobs, [ae.DockerEntry(m, ["docker.io/library/app:1"])]
    )
    names = [r.name for r in records]
    assert names == sorted(names) and len(names) == len(set(names))
    assert names == [
        "blobs/",
        "blobs/sha256/",
        "blobs/sha256/" + "0" * 64,
        "blobs/sha256/" + HEX,
        "index.json",
        "manifest.json",
        "oci-layout",
    ]
    index = json.loads(next(r.data for r in records if r.name == "index.json") or b"")
    assert index["manifests"][0]["annotations"] == {
        ai.ANNOTATION_IMAGE_NAME: "docker.io/library/app:1",
        ai.ANNOTATION_REF_NAME: "1",
    }
    docker = json.loads(next(r.data for r in records if r.name == "manifest.json") or b"")
    assert docker == [{"Config": "blobs/sha256/" + "0" * 64, "RepoTags": ["app:1"], "Layers": []}]


def test_headers_are_deterministic_ustar() -> None:
    record = ae.Record("index.json", 0o644, data=b"{}")
    raw = ae.header(record) + b"{}" + ae.padding(2) + ae.end_of_archive()
    assert ae.header(record) == ae.header(record)
    assert len(raw) % ae.BLOCK == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.size, member.mode, member.mtime) == ("index.json", 2, 0o644, 0)
        assert member.uid == member.gid == 0


# -- rootfs -----------------------------------------------------------------------------------


def test_rootfs_layer_from_a_directory(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path)) / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("hi\n")
    out = io.BytesIO()
    layer = rf.build_layer(root, out)
    data = out.getvalue()
    assert layer.desc.size == len(data) and data[:2] == b"\x1f\x8b"
    assert layer.desc.media_type == mt.OCI_LAYER_GZIP
    import gzip
    import hashlib

    plain = gzip.decompress(data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert "bin/hello" in tar.getnames()


def test_rootfs_config_names_platform_cmd_env_and_diff_id() -> None:
    data = rf.image_config(
        DIGEST, Platform("linux", "arm", "v7"), cmd=["/bin/sh"], env=["A=1"], workdir="/w"
    )
    doc = json.loads(data)
    assert (doc["os"], doc["architecture"], doc["variant"]) == ("linux", "arm", "v7")
    assert doc["config"] == {"Env": ["A=1"], "Cmd": ["/bin/sh"], "WorkingDir": "/w"}
    assert parse_config(data).diff_ids == [DIGEST]
    with pytest.raises(errdefs.InvalidArgument, match="KEY=VALUE"):
        rf.image_config(DIGEST, Platform("linux", "amd64"), env=["novalue"])
    with pytest.raises(errdefs.InvalidArgument, match="absolute"):
        rf.image_config(DIGEST, Platform("linux", "amd64"), workdir="rel")


def test_rootfs_layers_are_reproducible(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path)) / "root"
    root.mkdir()
    (root / "file").write_bytes(b"x" * 100_000)
    first, second = io.BytesIO(), io.BytesIO()
    assert rf.build_layer(root, first) == rf.build_layer(root, second)
    assert first.getvalue()[4:8] == b"\0\0\0\0"


def test_gzip_time_is_zeroed_across_split_writes() -> None:
    out = io.BytesIO()
    w = rf.ZeroGzipTime(out)
    header = b"\x1f\x8b\x08\x00\x11\x22\x33\x44\x00\xff"
    for i in range(len(header)):
        w.write(header[i : i + 1])
    w.write(b"rest")
    assert out.getvalue() == b"\x1f\x8b\x08\x00\0\0\0\0\x00\xffrest"
