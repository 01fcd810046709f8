"""Unpacking: layer pairing, names and labels, the image-config spec, and the
client's unpack steps against a fake daemon (content, snapshots, diff)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pycontainerd import errdefs, leases
from pycontainerd.client._async.image import AsyncImage
from pycontainerd.content import Info as ContentInfo
from pycontainerd.images import Descriptor, Image
from pycontainerd.images.identity import chain_ids
from pycontainerd.images.unpack import (
    LABEL_STOP_SIGNAL,
    gc_snapshot_label,
    pair_layers,
    resolve_user,
    unpack_key,
    with_image_config,
)
from pycontainerd.mount import Mount
from pycontainerd.oci import spec as oci
from pycontainerd.snapshots import LABEL_UNPACKED_REF, Info, Kind, Usage
from tests.unit._meta import run

pytestmark = pytest.mark.unit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(n: int) -> tuple[Descriptor, str]:
    blob = f"compressed layer {n}".encode()
    return Descriptor(OCI_LAYER_GZIP, _digest(blob), len(blob)), _digest(f"tar {n}".encode())


# -- pure helpers


def test_pair_layers_zips_blobs_with_diff_ids() -> None:
    (b1, d1), (b2, d2) = _layer(1), _layer(2)
    pairs = pair_layers([b1, b2], [d1, d2])
    assert [(p.blob, p.diff_id) for p in pairs] == [(b1, d1), (b2, d2)]


def test_pair_layers_refuses_a_config_for_another_image() -> None:
    (b1, d1), (_, d2) = _layer(1), _layer(2)
    with pytest.raises(errdefs.FailedPrecondition, match="mismatched image rootfs"):
        pair_layers([b1], [d1, d2])


def test_unpack_key_has_containerds_form_and_is_fresh() -> None:
    chain = "sha256:" + "a" * 64
    key = unpack_key(chain)
    assert re.fullmatch(r"extract-\d+-[A-Za-z0-9_-]{4} sha256:a{64}", key), key
    assert len({unpack_key(chain) for _ in range(50)}) > 1


def test_gc_snapshot_label_names_the_snapshotter() -> None:
    assert gc_snapshot_label("overlayfs") == "containerd.io/gc.ref.snapshot.overlayfs"
    assert LABEL_STOP_SIGNAL == "io.containerd.image.config.stop-signal"


def _spec_with(config: Mapping[str, Any], args: Sequence[str] = (), env: Sequence[str] = ()) -> Any:
    return oci.generate("ns", "c1", oci.with_env(env), with_image_config(config, args))


def test_image_config_sets_entrypoint_cmd_env_and_cwd() -> None:
    config = {
        "config": {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Env": ["PATH=/bin", "A=1"],
            "WorkingDir": "/srv",
        }
    }
    process = _spec_with(config, env=["A=2", "B=3"])["process"]
    assert process["args"] == ["/bin/sh", "-c", "echo hi"]
    # What the user set wins over the image's defaults.
    assert process["env"] == ["PATH=/bin", "A=2", "B=3"]
    assert process["cwd"] == "/srv"


def test_image_config_args_replace_cmd_but_keep_entrypoint() -> None:
    config = {"config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["sh"]}}
    assert _spec_with(config, args=["ls", "/"])["process"]["args"] == ["/bin/busybox", "ls", "/"]


def test_image_config_without_env_or_workdir_gets_containerds_defaults() -> None:
    process = _spec_with({"config": {"Cmd": ["sh"]}})["process"]
    assert process["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert process["cwd"] == "/"


PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www:x:33:33:www:/var/www:/bin/false
broken line
"""
GROUP = """root:x:0:
wheel:x:10:root
www:x:33:
web:x:50:www,nobody
"""


def test_image_without_user_runs_as_root_with_roots_groups() -> None:
    assert resolve_user("", None, None) == {"uid": 0, "gid": 0, "additionalGids": [0]}
    # Groups naming root, except the group called root, as containerd 1.6.20.
    assert resolve_user("", PASSWD, GROUP)["additionalGids"] == [0, 10]


def test_image_user_by_name_takes_uid_gid_and_groups_from_etc() -> None:
    assert resolve_user("www", PASSWD, GROUP) == {"uid": 33, "gid": 33, "additionalGids": [33, 50]}
    assert resolve_user("www:wheel", PASSWD, GROUP)["gid"] == 10


def test_image_numeric_user_not_in_passwd_gets_gid_zero() -> None:
    assert resolve_user("1000", PASSWD, GROUP) == {"uid": 1000, "gid": 0, "additionalGids": [0]}
    assert resolve_user("1000:100", None, None) == {
        "uid": 1000,
        "gid": 100,
        "additionalGids": [100],
    }


def test_image_user_that_does_not_exist_is_an_error_not_root() -> None:
    with pytest.raises(errdefs.NotFound, match="nobody"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(errdefs.InvalidArgument, match="invalid USER value"):
        resolve_user("a:b:c", PASSWD, GROUP)


def test_image_config_user_lands_in_the_spec() -> None:
    spec = oci.generate(
        "ns", "c1", with_image_config({"config": {"User": "www"}}, passwd=PASSWD, group=GROUP)
    )
    assert spec["process"]["user"] == {"uid": 33, "gid": 33, "additionalGids": [33, 50]}


# -- the client's unpack against a fake daemon


@dataclass
class FakeSnapshotter:
    snapshots: dict[str, Info] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def stat(self, key: str) -> Info:
        if key not in self.snapshots:
            raise errdefs.NotFound(f"snapshot {key}: not found")
        return self.snapshots[key]

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        self.calls.append(f"prepare {key} on {parent!r}")
        if parent and parent not in self.snapshots:
            raise errdefs.NotFound(f"parent {parent}: not found")
        self.snapshots[key] = Info(key, Kind.ACTIVE, parent, dict(labels or {}))
        return [Mount("bind", f"/fake/{key}", ("rw",))]

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        self.calls.append(f"commit {name}")
        if name in self.snapshots:
            raise errdefs.AlreadyExists(f"snapshot {name}: already exists")
        active = self.snapshots.pop(key)
        self.snapshots[name] = Info(name, Kind.COMMITTED, active.parent, dict(labels or {}))

    async def remove(self, key: str) -> None:
        self.calls.append(f"remove {key}")
        if self.snapshots.pop(key, None) is None:
            raise errdefs.NotFound(f"snapshot {key}: not found")

    async def usage(self, key: str) -> Usage:
        await self.stat(key)
        return Usage(100, 3)


@dataclass
class FakeDiff:
    diff_ids: dict[str, str]
    applied: list[str] = field(default_factory=list)
    fail: bool = False

    async def apply(self, desc: Descriptor, mounts: list[Mount]) -> Descriptor:
        if self.fail:
            raise errdefs.InvalidArgument("bad tar header")
        self.applied.append(desc.digest)
        return Descriptor("application/vnd.oci.image.layer.v1.tar", self.diff_ids[desc.digest], 1)


@dataclass
class FakeContent:
    blobs: dict[str, bytes] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    async def read(self, digest: str) -> bytes:
        if digest not in self.blobs:
            raise errdefs.NotFound(f"content digest {digest}: not found")
        return self.blobs[digest]

    async def info(self, digest: str) -> ContentInfo:
        data = await self.read(digest)
        return ContentInfo(digest, len(data), labels=self.labels.get(digest, {}))

    async def set_labels(self, digest: str, labels: Mapping[str, str]) -> ContentInfo:
        self.labels.setdefault(digest, {}).update(labels)
        return await self.info(digest)

    def walk(self, *filters: str) -> AsyncIterator[ContentInfo]:
        raise NotImplementedError


class FakeNamespaces:
    async def get(self, name: str) -> Any:
        raise errdefs.NotFound(name)


class FakeTasks:
    """A daemon with no task for any container."""

    async def get(self, container_id: str) -> Any:
        raise errdefs.NotFound(f"task {container_id}")


class FakeClient:
    namespace = "default"

    def __init__(self, layers: int = 2) -> None:
        self.content = FakeContent()
        self.namespaces = FakeNamespaces()
        self.tasks = FakeTasks()
        self.sn = FakeSnapshotter()
        pairs = [_layer(i) for i in range(layers)]
        for blob, _ in pairs:
            self.content.blobs[blob.digest] = b"x" * blob.size
        self.diff = FakeDiff({blob.digest: diff_id for blob, diff_id in pairs})
        self.diff_ids = [d for _, d in pairs]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
                "config": {"Cmd": ["sh"]},
            }
        ).encode()
        self.config = self._put(config, OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config.digest, "size": len(config)},
            "layers": [
                {"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b, _ in pairs
            ],
        }
        self.manifest = self._put(json.dumps(manifest).encode(), OCI_MANIFEST)
        self.layers = [b for b, _ in pairs]

    def _put(self, data: bytes, media_type: str) -> Descriptor:
        self.content.blobs[_digest(data)] = data
        return Descriptor(media_type, _digest(data), len(data))

    def snapshot_service(self, name: str) -> FakeSnapshotter:
        assert name == "overlayfs"
        return self.sn

    def image(self) -> AsyncImage:
        return AsyncImage(self, Image("docker.io/library/test:latest", self.manifest))  # type: ignore[arg-type]


def _unpack(client: FakeClient) -> bool:
    async def go() -> bool:
        with leases.lease("test-lease"):
            return await client.image().unpack()

    return run(go())


def test_unpack_commits_each_layer_under_its_chain_id() -> None:
    client = FakeClient(layers=3)
    assert _unpack(client) is True
    chain = chain_ids(client.diff_ids)
    committed = {k: v for k, v in client.sn.snapshots.items() if v.kind == Kind.COMMITTED}
    assert set(committed) == set(chain)
    assert [committed[c].parent for c in chain] == ["", chain[0], chain[1]]
    assert all(committed[c].labels[LABEL_UNPACKED_REF] == c for c in chain)
    assert not [k for k in client.sn.snapshots if k.startswith("extract-")]


def test_unpack_labels_layers_uncompressed_and_config_gc_ref() -> None:
    client = FakeClient(layers=2)
    _unpack(client)
    for blob, diff_id in zip(client.layers, client.diff_ids, strict=True):
        assert client.content.labels[blob.digest]["containerd.io/uncompressed"] == diff_id
    top = chain_ids(client.diff_ids)[-1]
    assert client.content.labels[client.config.digest] == {
        "containerd.io/gc.ref.snapshot.overlayfs": top
    }


def test_unpack_twice_applies_nothing_the_second_time() -> None:
    client = FakeClient(layers=2)
    _unpack(client)
    client.diff.applied.clear()
    assert _unpack(client) is False
    assert client.diff.applied == []
    assert run(client.image().is_unpacked()) is True


def test_unpack_rejects_a_layer_whose_diff_id_does_not_match() -> None:
    client = FakeClient(layers=1)
    client.diff.diff_ids[client.layers[0].digest] = "sha256:" + "0" * 64
    with pytest.raises(errdefs.FailedPrecondition, match="wrong diff id"):
        _unpack(client)
    # The extraction snapshot is removed and nothing is committed.
    assert client.sn.snapshots == {}


def test_unpack_failure_in_apply_removes_the_extraction_snapshot() -> None:
    client = FakeClient(layers=1)
    client.diff.fail = True
    with pytest.raises(errdefs.InvalidArgument, match=r"failed to extract layer .*bad tar"):
        _unpack(client)
    assert client.sn.snapshots == {}


def test_unpack_accepts_a_layer_committed_meanwhile_by_someone_else() -> None:
    client = FakeClient(layers=1)
    chain = chain_ids(client.diff_ids)[0]
    original_prepare = client.sn.prepare

    async def racing_prepare(
        key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        mounts = await original_prepare(key, parent, labels)
        client.sn.snapshots[chain] = Info(chain, Kind.COMMITTED)
        return mounts

    client.sn.prepare = racing_prepare  # type: ignore[method-assign]
    assert _unpack(client) is False
    assert set(client.sn.snapshots) == {chain}


def test_unpack_refuses_a_manifest_that_does_not_match_its_digest() -> None:
    client = FakeClient(layers=1)
    client.content.blobs[client.manifest.digest] = b"{}" + b" " * (client.manifest.size - 2)
    with pytest.raises(errdefs.FailedPrecondition, match="does not match"):
        _unpack(client)


def test_image_size_and_usage_count_manifest_config_layers_and_snapshots() -> None:
    client = FakeClient(layers=2)
    image = client.image()
    expected = client.manifest.size + client.config.size + sum(b.size for b in client.layers)
    assert run(image.size()) == expected
    assert run(image.usage()) == expected
    _unpack(client)
    # The config's gc label points at the top snapshot: 100 bytes in the fake.
    assert run(image.usage(snapshots=True)) == expected + 100


# -- container options that make the root filesystem from an image


class FakeContainers:
    def __init__(self) -> None:
        self.records: dict[str, Any] = {}

    async def get(self, id: str) -> Any:
        return self.records[id]

    async def delete(self, id: str) -> None:
        del self.records[id]


def _build(client: FakeClient, *opts: Any) -> Any:
    from pycontainerd.client._async.containers import build

    async def go() -> Any:
        return await build(client, "web", opts)  # type: ignore[arg-type]

    return run(go())


def test_with_new_snapshot_prepares_on_the_image_top_layer() -> None:
    from pycontainerd.client._async.containers import with_new_snapshot

    client = FakeClient(layers=2)
    _unpack(client)
    record = _build(client, with_new_snapshot("web", client.image(), labels={"a": "b"}))
    top = chain_ids(client.diff_ids)[-1]
    assert (record.snapshotter, record.snapshot_key) == ("overlayfs", "web")
    assert record.image == "docker.io/library/test:latest"
    assert client.sn.snapshots["web"] == Info("web", Kind.ACTIVE, top, {"a": "b"})


def test_with_new_snapshot_fails_when_the_image_is_not_unpacked() -> None:
    from pycontainerd.client._async.containers import with_new_snapshot

    client = FakeClient(layers=1)
    with pytest.raises(errdefs.NotFound):
        _build(client, with_new_snapshot("web", client.image()))


def test_with_snapshot_requires_an_existing_snapshot() -> None:
    from pycontainerd.client._async.containers import with_snapshot

    client = FakeClient(layers=1)

    async def mounts(key: str) -> list[Mount]:
        await client.sn.stat(key)
        return []

    client.sn.mounts = mounts  # type: ignore[attr-defined]
    with pytest.raises(errdefs.NotFound):
        _build(client, with_snapshot("absent"))
    client.sn.snapshots["mine"] = Info("mine", Kind.ACTIVE)
    assert _build(client, with_snapshot("mine")).snapshot_key == "mine"


def test_delete_with_cleanup_removes_the_snapshot_then_the_record() -> None:
    from pycontainerd.client._async.containers import AsyncContainer, with_new_snapshot

    client = FakeClient(layers=1)
    _unpack(client)
    record = _build(client, with_new_snapshot("web", client.image()))
    store = FakeContainers()
    store.records["web"] = record
    client.containers = store  # type: ignore[attr-defined]
    run(AsyncContainer(client, record).delete(cleanup_snapshot=True))  # type: ignore[arg-type]
    assert "web" not in client.sn.snapshots
    assert store.records == {}
    # A snapshot already gone is fine.
    store.records["web"] = record
    run(AsyncContainer(client, record).delete(cleanup_snapshot=True))  # type: ignore[arg-type]
    assert store.records == {}
