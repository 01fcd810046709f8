"""Container records in the metadata store: containerd 1.6's rules and messages."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs, namespaces
from pycontainerd.containers import Container, RuntimeInfo
from pycontainerd.metadata import Metadata
from pycontainerd.metadata._codec import dump_any, to_datetime
from tests.unit._meta import run

pytestmark = pytest.mark.unit

SPEC = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")


def record(id: str = "web", **kw: object) -> Container:
    kw.setdefault("runtime", RuntimeInfo("io.containerd.runc.v2"))
    kw.setdefault("spec", SPEC)
    return Container(id=id, **kw)  # type: ignore[arg-type]


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Metadata]:
    m = Metadata.open(tmp_path)
    try:
        with namespaces.namespace("default"):
            yield m
    finally:
        m.close()


def test_create_get_round_trips_every_field(md: Metadata) -> None:
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x08\x01")
    ext = any_pb2.Any(type_url="ext.v1", value=b"\x00\xff")
    created = run(
        md.containers.create(
            record(
                labels={"a": "b"},
                image="docker.io/library/busybox:latest",
                runtime=RuntimeInfo("io.containerd.runc.v2", opts),
                snapshotter="overlayfs",
                snapshot_key="web-snap",
                extensions={"x": ext},
            )
        )
    )
    got = md.containers.get("web")
    assert got == created
    assert got.runtime.options == opts and got.extensions["x"] == ext
    assert got.created_at == got.updated_at and got.created_at.year >= 2024


def test_empty_label_values_are_not_stored(md: Metadata) -> None:
    created = run(md.containers.create(record(labels={"keep": "1", "drop": ""})))
    assert created.labels == {"keep": "1"}
    assert md.containers.get("web").labels == {"keep": "1"}


def test_duplicate_id_already_exists(md: Metadata) -> None:
    run(md.containers.create(record()))
    with pytest.raises(errdefs.AlreadyExists, match=r'^container "web"$'):
        run(md.containers.create(record()))


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (record("bad/id"), 'container.ID: identifier "bad/id" must match'),
        (record(runtime=RuntimeInfo("")), "container.Runtime.Name must be set"),
        (record(spec=None), "container.Spec must be set"),
        (record(snapshot_key="k"), "container.Snapshotter must be set if"),
        (record(extensions={"": SPEC}), "container.Extension keys must not be zero-length"),
        (record(labels={"k": "v" * 5000}), "containers.Labels: label key and value greater"),
    ],
)
def test_create_validates_like_containerd(md: Metadata, container: Container, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        run(md.containers.create(container))
    assert info.value.message.startswith("create container failed validation: " + message)


def test_get_missing_names_the_namespace(md: Metadata) -> None:
    with pytest.raises(errdefs.NotFound, match=r'^container "nope" in namespace "default"$'):
        md.containers.get("nope")


def test_namespace_is_required_and_created_implicitly(md: Metadata) -> None:
    with namespaces.namespace(None), pytest.raises(errdefs.FailedPrecondition):
        md.containers.get("web")
    with namespaces.namespace("fresh"):
        run(md.containers.create(record()))
    assert "fresh" in [ns.name for ns in md.namespaces.list()]


def test_containers_are_invisible_across_namespaces(md: Metadata) -> None:
    run(md.containers.create(record()))
    with namespaces.namespace("other"):
        assert run(md.containers.list()) == []
        with pytest.raises(errdefs.NotFound):
            md.containers.get("web")
        run(md.containers.create(record()))  # the same id is free here
    assert [c.id for c in run(md.containers.list())] == ["web"]


def test_list_sorted_and_filtered(md: Metadata) -> None:
    for cid, image, labels in [
        ("b", "docker.io/library/redis:7", {"app": "cache"}),
        ("a", "docker.io/library/nginx:1", {"app": "web", "tier.x": "1"}),
        ("c", "", {}),
    ]:
        run(md.containers.create(record(cid, image=image, labels=labels)))
    assert [c.id for c in run(md.containers.list())] == ["a", "b", "c"]

    def ids(*fs: str) -> list[str]:
        listed = [c.id for c in run(md.containers.list(*fs))]
        assert [c.id for c in run(md.containers.list_raw(*fs))] == listed
        return listed

    assert ids("labels.app==web") == ["a"]
    assert ids('labels."tier.x"==1') == ["a"]
    assert ids("image~=redis") == ["b"]
    assert ids("image") == ["a", "b"]
    assert ids("id==c", "id==a") == ["a", "c"]
    assert ids("runtime.name==io.containerd.runc.v2") == ["a", "b", "c"]
    assert ids("runtime.name==other") == []


def test_list_rejects_bad_filter_with_containerd_wording(md: Metadata) -> None:
    for list_ in (md.containers.list, md.containers.list_raw):
        with pytest.raises(errdefs.InvalidArgument) as info:
            run(list_("id=="))
        assert info.value.message == (
            "filters: parse error: [id==]: expected value or quoted: invalid argument: "
            "invalid argument"
        )


def test_list_raw_is_list_with_any_values_left_serialized(md: Metadata) -> None:
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x08\x01")
    ext = any_pb2.Any(type_url="ext.v1", value=b"\x00\xff")
    run(md.containers.create(record("a", labels={"k": "v"}, runtime=RuntimeInfo("rt", opts))))
    run(md.containers.create(record("b", image="img", extensions={"x": ext})))
    for got, want in zip(run(md.containers.list_raw()), run(md.containers.list()), strict=True):
        assert (got.id, got.labels, got.image, got.runtime_name) == (
            want.id,
            want.labels,
            want.image,
            want.runtime.name,
        )
        assert got.runtime_options == dump_any(want.runtime.options)
        assert got.spec == dump_any(want.spec)
        assert {k: any_pb2.Any.FromString(v) for k, v in got.extensions.items()} == want.extensions
        assert to_datetime(got.created_at) == want.created_at
        assert to_datetime(got.updated_at) == want.updated_at


def test_update_by_field_paths(md: Metadata) -> None:
    run(md.containers.create(record(labels={"a": "1", "b": "2"}, image="img:1")))
    updated = run(
        md.containers.update(
            Container("web", labels={"a": "9", "c": "3"}, image="ignored"),
            "labels.a",
            "labels.b",
            "labels.c",
        )
    )
    assert updated.labels == {"a": "9", "c": "3"}  # b had no value: removed
    assert updated.image == "img:1"
    assert updated.updated_at >= updated.created_at
    assert md.containers.get("web") == updated
    new_spec = any_pb2.Any(type_url=SPEC.type_url, value=b'{"ociVersion":"1"}')
    after = run(
        md.containers.update(Container("web", spec=new_spec, image="img:2"), "spec", "image")
    )
    assert after.spec == new_spec and after.image == "img:2" and after.labels == updated.labels


def test_update_extension_keys(md: Metadata) -> None:
    ext = any_pb2.Any(type_url="e", value=b"1")
    run(md.containers.create(record(extensions={"keep": ext, "drop": ext})))
    updated = run(
        md.containers.update(
            Container("web", extensions={"new": ext}), "extensions.new", "extensions.drop"
        )
    )
    assert set(updated.extensions) == {"keep", "new"}


@pytest.mark.parametrize(
    ("paths", "change", "message"),
    [
        (("runtime",), {}, 'cannot update "runtime" field on "web"'),
        (("snapshotter",), {}, 'cannot update "snapshotter" field on "web"'),
        ((), {"runtime": RuntimeInfo("other")}, "container.Runtime.Name field is immutable"),
        ((), {"snapshotter": "native"}, "container.Snapshotter field is immutable"),
        (("spec",), {"spec": None}, "update failed validation: container.Spec must be set"),
        (
            ("snapshotkey",),
            {"snapshot_key": "k"},
            "update failed validation: container.Snapshotter",
        ),
    ],
)
def test_update_refuses_what_containerd_refuses(
    md: Metadata, paths: tuple[str, ...], change: dict[str, object], message: str
) -> None:
    run(md.containers.create(record()))
    new = record(**change)
    with pytest.raises(errdefs.InvalidArgument) as info:
        run(md.containers.update(new, *paths))
    assert info.value.message.startswith(message)


def test_full_replace_keeps_created_at(md: Metadata) -> None:
    created = run(md.containers.create(record(labels={"a": "1"}, image="x")))
    replaced = run(md.containers.update(record(labels={"z": "1"})))
    assert replaced.labels == {"z": "1"} and replaced.image == ""
    assert replaced.created_at == created.created_at


def test_update_and_delete_missing(md: Metadata) -> None:
    with pytest.raises(
        errdefs.NotFound, match='cannot update container "x" in namespace "default"'
    ):
        run(md.containers.update(record("x")))
    with pytest.raises(errdefs.NotFound, match='cannot delete container "x" in namespace'):
        run(md.containers.delete("x"))
    run(md.containers.create(record()))
    with pytest.raises(errdefs.NotFound, match=r'^container "x"$'):
        run(md.containers.update(record("x")))
    with pytest.raises(errdefs.NotFound, match=r"^container x$"):
        run(md.containers.delete("x"))


def test_delete_marks_the_database_dirty(md: Metadata) -> None:
    run(md.containers.create(record()))
    before = md.db.dirty
    run(md.containers.delete("web"))
    assert md.db.dirty == before + 1
    with pytest.raises(errdefs.NotFound):
        md.containers.get("web")


def test_records_survive_reopening(tmp_path: Path) -> None:
    m = Metadata.open(tmp_path)
    with namespaces.namespace("default"):
        created = run(m.containers.create(record(labels={"a": "b"})))
    m.close()
    m = Metadata.open(tmp_path)
    try:
        with namespaces.namespace("default"):
            assert m.containers.get("web") == created
    finally:
        m.close()


def test_namespace_with_containers_cannot_be_deleted(md: Metadata) -> None:
    run(md.containers.create(record()))
    with pytest.raises(errdefs.FailedPrecondition, match="still has containers"):
        run(md.namespaces.delete("default"))
    # And the row is really there, in the table the schema documents.
    conn = sqlite3.connect(md.db.path)
    try:
        rows = conn.execute("SELECT namespace, id FROM containers").fetchall()
    finally:
        conn.close()
    assert rows == [("default", "web")]


def test_list_raw_cache_follows_every_committed_write(md: Metadata) -> None:
    run(md.containers.create(record("a", labels={"v": "1"})))
    first = run(md.containers.list_raw())
    assert run(md.containers.list_raw()) is first  # unchanged: the same records
    run(md.containers.update(record("a", labels={"v": "2"}), "labels"))
    assert [c.labels for c in run(md.containers.list_raw())] == [{"v": "2"}]
    run(md.containers.create(record("b")))
    assert [c.id for c in run(md.containers.list_raw())] == ["a", "b"]
    run(md.containers.delete("a"))
    assert [c.id for c in run(md.containers.list_raw())] == ["b"]
    with namespaces.namespace("other"):
        assert list(run(md.containers.list_raw())) == []


def test_list_raw_cache_sees_writes_from_other_stores(md: Metadata) -> None:
    """Any commit to the database (here: a lease) makes the cache stale."""
    run(md.containers.create(record("a")))
    before = run(md.containers.list_raw())
    run(md.leases.create("l1"))
    after = run(md.containers.list_raw())
    assert after is not before and after == before
