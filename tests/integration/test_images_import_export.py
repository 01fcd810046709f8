"""Import and export of image archives with pyctr and Debian's ctr, on both daemons.

Images are built here from busybox-static: a ``docker save`` tar (legacy
layout), an OCI layout with one manifest and an OCI layout with a
two-platform index.  containerd, driven by its own ctr, is the reference:
what pyctr makes on our daemon, and on containerd, must list, label and
export the same, byte for byte where containerd is deterministic.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli, table
from tests.support import daemons

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _config(diff_id: str, arch: str = "amd64") -> bytes:
    return json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()


def docker_archive(path: Path, tag: str, *, symlink: bool = False) -> set[str]:
    """A legacy ``docker save`` tar; returns the digests of its config and layer.

    With ``symlink`` the layer is listed through ``other/layer.tar``, a
    symlink to it, as Docker v1.2 writes shared layers.
    """
    layer = _layer()
    config = _config(_sha(layer))
    cfg_hex, layer_id = _sha(config)[7:], _sha(layer)[7:]
    listed = "other/layer.tar" if symlink else f"{layer_id}/layer.tar"
    entry = {"Config": f"{cfg_hex}.json", "RepoTags": [tag], "Layers": [listed]}
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{layer_id}/VERSION", b"1.0")
        _add(tar, f"{layer_id}/json", b"{}")
        _add(tar, f"{layer_id}/layer.tar", layer)
        if symlink:
            link = tarfile.TarInfo("other/layer.tar")
            link.type, link.linkname = tarfile.SYMTYPE, f"../{layer_id}/layer.tar"
            tar.addfile(link)
        _add(tar, f"{cfg_hex}.json", config)
        _add(tar, "manifest.json", json.dumps([entry]).encode())
        _add(tar, "repositories", b"{}")
    return {_sha(config), _sha(layer)}


def oci_layout(
    path: Path,
    annotations: dict[str, str],
    arches: tuple[str, ...] = ("amd64",),
    *,
    blob_name: str | None = None,
    drop: str = "",
    index_json: bytes | None = None,
    docker_manifest: bool = False,
) -> set[str]:
    """An OCI layout tar (an index when several arches); returns its blob digests.

    ``blob_name`` renames the layer entry, ``drop`` leaves out a blob
    (``layer``), ``index_json`` replaces index.json: crafted archives.
    ``docker_manifest`` adds Docker's manifest.json, as ``docker save``
    writes since Docker 25 (the OCI layout wins).
    """
    layer = _layer()
    blob = gzip.compress(layer, mtime=0)
    blobs = {_sha(blob): blob}
    entries = []
    for arch in arches:
        config = _config(_sha(layer), arch)
        blobs[_sha(config)] = config
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _sha(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _sha(blob),
                        "size": len(blob),
                    }
                ],
            }
        ).encode()
        blobs[_sha(manifest)] = manifest
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": _sha(manifest),
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    if len(arches) > 1:
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        ).encode()
        blobs[_sha(index)] = index
        top = {"mediaType": OCI_INDEX, "digest": _sha(index), "size": len(index)}
    else:
        top = entries[0]
    top["annotations"] = annotations
    if index_json is None:
        index_json = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", index_json)
        if docker_manifest:
            config_digest = next(d for d, b in blobs.items() if b.startswith(b'{"architecture"'))
            entry = {
                "Config": f"blobs/sha256/{config_digest[7:]}",
                "RepoTags": ["ignored:docker"],
                "Layers": [f"blobs/sha256/{_sha(blob)[7:]}"],
            }
            _add(tar, "manifest.json", json.dumps([entry]).encode())
        for dgst, data in blobs.items():
            if drop == "layer" and dgst == _sha(blob):
                continue
            name = f"blobs/sha256/{dgst[7:]}"
            if blob_name is not None and dgst == _sha(blob):
                name = blob_name
            _add(tar, name, data)
    return set(blobs)


def _name(tag: str) -> dict[str, str]:
    return {
        "io.containerd.image.name": f"docker.io/library/{tag}",
        "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1],
    }


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, set[str]]]:
    base = tmp_path_factory.mktemp("archives")
    return {
        "docker": (base / "docker.tar", docker_archive(base / "docker.tar", "bb:docker")),
        "oci": (base / "oci.tar", oci_layout(base / "oci.tar", _name("bb:oci"))),
        "multi": (
            base / "multi.tar",
            oci_layout(base / "multi.tar", _name("bb:multi"), ("amd64", "arm64")),
        ),
    }


@pytest.fixture(scope="module")
def ours() -> Iterator[daemons.RunningDaemon]:
    with daemons.pycontainerd() as d:
        yield d


def _clis(d: daemons.RunningDaemon, ns: str) -> tuple[Cli, Cli]:
    return Cli("ctr", d.address, ns), Cli("pyctr", d.address, ns)


def _import_all(cli: Cli, archives: dict[str, tuple[Path, set[str]]], *flags: str) -> str:
    out = []
    for key in ("docker", "oci", "multi"):
        extra = ["--all-platforms"] if key == "multi" else []
        out.append(cli("images", "import", *flags, *extra, str(archives[key][0])).stdout)
    return "".join(out)


def _content_labels(ctr: Cli) -> dict[str, tuple[str, frozenset[str]]]:
    """``ctr content ls`` as digest -> (size, labels), without the AGE column."""
    rows = {}
    for line in ctr("content", "ls").stdout.splitlines()[1:]:
        cells = line.split("\t")
        cells = [c for c in cells if c]
        labels = frozenset(cells[-1].split(",")) if cells[-1] != "-" else frozenset()
        rows[cells[0]] = (cells[1], labels)
    return rows


def test_pyctr_import_matches_ctr_on_both_daemons(
    ours: daemons.RunningDaemon,
    containerd: daemons.RunningDaemon,
    archives: dict[str, tuple[Path, set[str]]],
) -> None:
    ref_ctr, _ = _clis(containerd, "ref")
    _import_all(ref_ctr, archives, "--no-unpack")
    expected = table(ref_ctr("images", "ls").stdout)
    expected_labels = _content_labels(ref_ctr)
    for d in (ours, containerd):
        ctr, pyctr = _clis(d, "py-import")
        assert _import_all(pyctr, archives, "--no-unpack") == ""
        # Listed the same by ctr (names, types, digests, SIZE, PLATFORMS) ...
        assert table(ctr("images", "ls").stdout) == expected
        # ... and by pyctr, whose table is ctr's.
        assert table(pyctr("images", "ls").stdout) == expected
        # The same blobs with the same gc.ref labels (the root index is left to GC).
        labels = _content_labels(ctr)
        for dgst, row in expected_labels.items():
            if dgst in labels:
                assert labels[dgst] == row, dgst
        images = {digest for *_, digest in (r[:3] for r in expected[1:])}
        assert images <= set(labels)


def test_ctr_imports_both_archive_types_into_our_daemon(
    ours: daemons.RunningDaemon, archives: dict[str, tuple[Path, set[str]]]
) -> None:
    ctr, _ = _clis(ours, "ctr-import")
    out = _import_all(ctr, archives)
    assert out.count("...done\n") == 3
    assert "unpacking docker.io/library/bb:docker (sha256:" in out
    rows = {r[0]: r for r in table(ctr("images", "ls").stdout)[1:]}
    assert set(rows) == {f"docker.io/library/bb:{k}" for k in ("docker", "oci", "multi")}
    assert rows["docker.io/library/bb:multi"][-2] == "linux/amd64,linux/arm64"
    for ref in rows:
        assert ctr("images", "check").stdout.count("complete") >= 1, ref
    # Every blob of the archives is stored under its own digest.
    stored = set(_content_labels(ctr))
    for key in ("docker", "oci", "multi"):
        assert archives[key][1] <= stored


def _members(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: _sha(tar.extractfile(m).read())  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _unordered(path: Path) -> tuple[dict[str, str], list[str]]:
    with tarfile.open(path) as tar:
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    members = _members(path.read_bytes())
    del members["manifest.json"]
    return members, sorted(json.dumps(entry, sort_keys=True) for entry in docker)


def test_export_is_byte_identical_to_ctrs(
    ours: daemons.RunningDaemon,
    containerd: daemons.RunningDaemon,
    archives: dict[str, tuple[Path, set[str]]],
    tmp_path: Path,
) -> None:
    ref_ctr, _ = _clis(containerd, "ref-export")
    _import_all(ref_ctr, archives, "--no-unpack", "--all-platforms")
    ctr, pyctr = _clis(ours, "export")
    _import_all(pyctr, archives, "--no-unpack", "--all-platforms")
    cases: dict[str, tuple[list[str], list[str]]] = {
        "docker": ([], ["docker.io/library/bb:docker"]),
        "multi": ([], ["docker.io/library/bb:multi"]),
        "all": (["--all-platforms"], ["docker.io/library/bb:multi"]),
        "arm64": (["--platform", "linux/arm64"], ["docker.io/library/bb:multi"]),
        "skip": (["--skip-manifest-json"], ["docker.io/library/bb:multi"]),
        "skip-one": (["--skip-manifest-json"], ["docker.io/library/bb:oci"]),
        "two": ([], ["docker.io/library/bb:oci", "docker.io/library/bb:docker"]),
    }
    for case, (flags, refs) in cases.items():
        reference = tmp_path / f"{case}-ref.tar"
        ref_ctr("images", "export", *flags, str(reference), *refs)
        for tool, cli in (("pyctr", pyctr), ("ctr", ctr)):
            out = tmp_path / f"{case}-{tool}.tar"
            cli("images", "export", *flags, str(out), *refs)
            if len(refs) == 1:
                assert out.read_bytes() == reference.read_bytes(), (case, tool)
            else:
                # containerd writes several manifest.json entries in map order.
                assert _unordered(out) == _unordered(reference), (case, tool)
    # Blobs come out with the digests they went in with.
    members = _members((tmp_path / "all-pyctr.tar").read_bytes())
    for name, dgst in members.items():
        if name.startswith("blobs/"):
            assert name == "blobs/sha256/" + dgst[7:]
    assert archives["multi"][1] <= {d for n, d in members.items() if n.startswith("blobs/")}
    # An export imports again, under the same names.
    _, again = _clis(ours, "export-again")
    again("images", "import", "--no-unpack", str(tmp_path / "docker-pyctr.tar"))
    assert [r[0] for r in table(again("images", "ls").stdout)[1:]] == [
        "docker.io/library/bb:docker"
    ]


def test_pyctr_export_to_stdout(
    ours: daemons.RunningDaemon, archives: dict[str, tuple[Path, set[str]]]
) -> None:
    import subprocess

    _, pyctr = _clis(ours, "stdout")
    pyctr("images", "import", "--no-unpack", str(archives["oci"][0]))
    result = subprocess.run(
        [
            pyctr.binary,
            "-a",
            ours.address,
            "-n",
            "stdout",
            "images",
            "export",
            "-",
            "docker.io/library/bb:oci",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert set(_members(result.stdout)) >= {"index.json", "manifest.json", "oci-layout"}


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        ({"blob_name": "../../etc/passwd"}, "path escapes the archive"),
        ({"blob_name": "blobs/sha256/notadigest"}, "blob name is not a digest"),
        ({"drop": "layer"}, "missing from the archive"),
        ({"index_json": b"{" + b" " * (4 << 20) + b"}"}, "over the 4194304-byte limit"),
        ({"index_json": b'{"schemaVersion":2,"manifests":[{"digest":"x","size":1}]}'}, "digest"),
    ],
)
def test_pyctr_refuses_crafted_archives(
    ours: daemons.RunningDaemon, tmp_path: Path, craft: dict[str, object], message: str
) -> None:
    archive = tmp_path / "crafted.tar"
    oci_layout(archive, _name("bb:crafted"), **craft)  # type: ignore[arg-type]
    ctr, pyctr = _clis(ours, "crafted")
    assert message in pyctr.error("images", "import", "--no-unpack", str(archive))
    assert table(ctr("images", "ls").stdout)[1:] == []


def test_import_names_follow_ctrs_flags(
    ours: daemons.RunningDaemon, containerd: daemons.RunningDaemon, tmp_path: Path
) -> None:
    archive = tmp_path / "tags.tar"
    oci_layout(archive, {"org.opencontainers.image.ref.name": "v1"})
    flags = [
        ("--base-name", "foo/bar"),
        ("--base-name", "foo/bar", "--digests", "--index-name", "idx/all:1"),
        ("--digests",),
    ]
    for i, extra in enumerate(flags):
        ns = f"names{i}"
        ref_ctr, _ = _clis(containerd, ns)
        ref_ctr("images", "import", "--no-unpack", *extra, str(archive))
        ctr, pyctr = _clis(ours, ns)
        pyctr("images", "import", "--no-unpack", *extra, str(archive))
        expected = [r[:3] for r in table(ref_ctr("images", "ls").stdout)]
        assert [r[:3] for r in table(ctr("images", "ls").stdout)] == expected


def test_import_from_rootfs_makes_a_runnable_one_layer_image(
    ours: daemons.RunningDaemon, containerd: daemons.RunningDaemon, tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    for d in (ours, containerd):
        ctr, pyctr = _clis(d, "rootfs")
        out = pyctr(
            "images",
            "import",
            "--from-rootfs",
            str(root),
            "local/bb:rootfs",
            "--config-cmd",
            "/bin/sh",
            "--config-cmd",
            "-c",
            "--config-env",
            "A=1",
            "--config-workdir",
            "/tmp",
        ).stdout
        assert out.startswith("unpacking local/bb:rootfs (sha256:") and out.endswith("...done\n")
        (row,) = table(ctr("images", "ls").stdout)[1:]
        assert row[:2] == ["local/bb:rootfs", OCI_MANIFEST]
        assert row[-2] == "linux/amd64"
        check = table(ctr("images", "check").stdout)[1]
        assert check[3:5] == ["complete", "(2/2)"] and check[-1] == "true"
        exported = tmp_path / f"rootfs-{d.process.pid}.tar"
        pyctr("images", "export", str(exported), "local/bb:rootfs")
        members = _members(exported.read_bytes())
        with tarfile.open(exported) as tar:
            docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            config = json.load(tar.extractfile(docker[0]["Config"]))  # type: ignore[arg-type]
        assert config["config"] == {"Env": ["A=1"], "Cmd": ["/bin/sh", "-c"], "WorkingDir": "/tmp"}
        assert len(config["rootfs"]["diff_ids"]) == 1 and len(members) == 6


def test_other_archive_shapes_import_as_with_containerd(
    ours: daemons.RunningDaemon, containerd: daemons.RunningDaemon, tmp_path: Path
) -> None:
    """Docker v1.2 symlinked layers, Docker 25's OCI layout with manifest.json,
    stdin, and --platform: pyctr on our daemon lists what ctr makes on containerd."""
    linked, both = tmp_path / "linked.tar", tmp_path / "both.tar"
    docker_archive(linked, "bb:linked", symlink=True)
    oci_layout(both, _name("bb:both"), docker_manifest=True)
    multi = tmp_path / "multi.tar"
    oci_layout(multi, _name("bb:multi"), ("amd64", "arm64"))
    runs = [
        ("--no-unpack", str(linked)),
        ("--no-unpack", str(both)),
        ("--no-unpack", "--platform", "linux/arm64", str(multi)),
    ]
    ref_ctr, _ = _clis(containerd, "shapes")
    ctr, pyctr = _clis(ours, "shapes")
    for args in runs:
        ref_ctr("images", "import", *args)
        pyctr("images", "import", *args)
    assert table(ctr("images", "ls").stdout) == table(ref_ctr("images", "ls").stdout)
    # The arm64 manifest is labelled to its children; the amd64 one is left for GC.
    labels, expected = _content_labels(ctr), _content_labels(ref_ctr)
    labelled = {d for d, (_, ls) in expected.items() if ls}
    assert {d for d, (_, ls) in labels.items() if ls} >= labelled
    for dgst in labelled:
        assert labels[dgst] == expected[dgst]


def test_pyctr_imports_from_stdin(
    ours: daemons.RunningDaemon, archives: dict[str, tuple[Path, set[str]]]
) -> None:
    import subprocess

    ctr, pyctr = _clis(ours, "stdin")
    with open(archives["docker"][0], "rb") as f:
        subprocess.run(
            [
                pyctr.binary,
                "-a",
                ours.address,
                "-n",
                "stdin",
                "images",
                "import",
                "--no-unpack",
                "-",
            ],
            stdin=f,
            check=True,
            timeout=60,
        )
    assert [r[0] for r in table(ctr("images", "ls").stdout)[1:]] == ["docker.io/library/bb:docker"]


@pytest.mark.parametrize("transport", ["socket", "inprocess"])
def test_async_client_round_trip(
    request: pytest.FixtureRequest,
    transport: str,
    archives: dict[str, tuple[Path, set[str]]],
    tmp_path: Path,
) -> None:
    """The hand-written async client: import, export, rootfs import -- over the
    socket, and over the in-process channel of a daemon in this process."""
    import asyncio

    from pycontainerd import namespaces
    from pycontainerd.client import AsyncClient
    from tests.support import inprocess

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("async\n")

    address = request.getfixturevalue("ours").address if transport == "socket" else ""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[AsyncClient]:
        if address:
            async with AsyncClient(address, "async-client") as c:
                yield c
            return
        async with (
            inprocess.serving() as server,
            AsyncClient(str(server.address), "async-client", channel=server.channel()) as c,
        ):
            yield c

    async def run() -> tuple[list[str], bytes, str]:
        async with connect() as client:
            with namespaces.namespace("async-client"), open(archives["multi"][0], "rb") as f:
                imported = await client.import_archive(f, all_platforms=True)
                out = io.BytesIO()
                await client.export(out, *(i.name for i in imported), all_platforms=True)
                image = await client.import_rootfs(root, "local/async:1", cmd=["/bin/true"])
            return [i.name for i in imported], out.getvalue(), image.target.media_type

    names, exported, media_type = asyncio.run(run())
    assert names == ["docker.io/library/bb:multi"]
    assert archives["multi"][1] <= {
        d for n, d in _members(exported).items() if n.startswith("blobs/")
    }
    assert media_type == OCI_MANIFEST


def test_docker_layers_reuse_or_gain_compressed_blobs(
    ours: daemons.RunningDaemon,
    containerd: daemons.RunningDaemon,
    archives: dict[str, tuple[Path, set[str]]],
) -> None:
    """After an unpacked OCI import labels its gzip layer with the diff ID, a
    Docker archive of the same layer points at that gzip blob (as
    containerd's importer does); --compress-blobs makes a gzip copy."""
    docker, oci = str(archives["docker"][0]), str(archives["oci"][0])
    ref_ctr, _ = _clis(containerd, "reuse")
    ref_ctr("images", "import", oci)
    ref_ctr("images", "import", "--no-unpack", docker)
    ctr, pyctr = _clis(ours, "reuse")
    pyctr("images", "import", oci)
    pyctr("images", "import", "--no-unpack", docker)
    assert table(ctr("images", "ls").stdout) == table(ref_ctr("images", "ls").stdout)

    ctr, pyctr = _clis(ours, "compress")
    pyctr("images", "import", "--compress-blobs", docker)
    (row,) = table(ctr("images", "ls").stdout)[1:]
    manifest = json.loads(ctr("content", "get", row[2]).stdout)
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    labels = _content_labels(ctr)[layer["digest"]][1]
    (diff_id,) = [d for d in archives["docker"][1] if d != manifest["config"]["digest"]]
    assert f"containerd.io/uncompressed={diff_id}" in labels
