"""Snapshot messages, the service's name checks and pyctr's renderings."""

from __future__ import annotations

import datetime as dt

import pytest

from pycontainerd import errdefs
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.cli.commands.snapshots import info_json, tree_lines
from pycontainerd.dialer import channel_target
from pycontainerd.edge import Call
from pycontainerd.edge.api.snapshots import SnapshotsAPI
from pycontainerd.services.snapshots import SnapshotsService
from pycontainerd.snapshots import Info, Kind, Usage
from pycontainerd.times import EPOCH
from pycontainerd.wire import snapshots as wire
from tests.unit._meta import run

pytestmark = pytest.mark.unit

WHEN = dt.datetime(2026, 11, 23, 9, 28, 33, 593035, tzinfo=dt.UTC)


def test_info_round_trips() -> None:
    info = Info("c1", Kind.COMMITTED, "p", {"a": "b"}, WHEN, WHEN)
    msg = wire.info_to_pb(info)
    assert (msg.name, msg.parent, msg.kind) == ("c1", "p", pb.COMMITTED)
    assert wire.info_from_pb(pb.Info.FromString(msg.SerializeToString())) == info


def test_unknown_kind_number_is_unknown() -> None:
    msg = pb.Info(name="x")
    msg.MergeFromString(b"\x18\x09")  # kind = 9, from a newer peer
    assert wire.info_from_pb(msg).kind == Kind.UNKNOWN


def test_usage_round_trips() -> None:
    assert wire.usage_from_pb(wire.usage_to_pb(Usage(4096, 3))) == Usage(4096, 3)


def test_update_request_carries_the_mask_only_when_given() -> None:
    info = Info("k", Kind.ACTIVE, labels={"a": "1"})
    req = wire.update_request("overlayfs", info, ["labels.a"])
    assert list(req.update_mask.paths) == ["labels.a"]
    assert wire.update_paths(req) == ["labels.a"]
    bare = wire.update_request("overlayfs", info, [])
    assert not bare.HasField("update_mask") and wire.update_paths(bare) == []


def test_requests_name_the_snapshotter() -> None:
    assert wire.prepare_request("s", "k", "p", {"l": "v"}).snapshotter == "s"
    assert wire.view_request("s", "k", "", None).labels == {}
    assert wire.commit_request("s", "n", "k", None).name == "n"
    assert list(wire.list_request("s", ("kind==view",)).filters) == ["kind==view"]


def test_service_rejects_unknown_or_missing_snapshotter() -> None:
    svc = SnapshotsService({}, None)
    with pytest.raises(errdefs.InvalidArgument, match=r"^snapshotter not loaded: nope$"):
        svc._get("nope")
    with pytest.raises(errdefs.InvalidArgument, match="snapshotter argument missing"):
        svc._get("")


def test_info_json_is_ctrs() -> None:
    info = Info("b", Kind.ACTIVE, "c1", {"k": "v"}, WHEN, EPOCH)
    assert list(info_json(info)) == ["Kind", "Name", "Parent", "Labels", "Created", "Updated"]
    assert info_json(info)["Kind"] == "Active"
    assert info_json(info)["Created"] == "2026-11-23T09:28:33.593035Z"
    assert list(info_json(Info("c", Kind.COMMITTED))) == ["Kind", "Name", "Created", "Updated"]


def test_tree_lines_are_ctrs() -> None:
    infos = [
        Info("b", Kind.ACTIVE, "c1"),
        Info("c1", Kind.COMMITTED),
        Info("v", Kind.VIEW, "c1"),
        Info("lone", Kind.ACTIVE),
    ]
    assert tree_lines(infos) == [" c1", "  \\_ b", "  \\_ v", " lone"]


def test_an_address_is_a_socket_path_unless_grpc_resolves_it() -> None:
    """One rule for the client and the daemon's proxy plugins."""
    assert channel_target("/run/x.sock") == "unix:///run/x.sock"
    assert channel_target("run/x.sock") == "unix:run/x.sock"
    for target in ("unix:///run/x.sock", "unix:/run/x.sock", "dns:///h:1", "ipv4:127.0.0.1:1"):
        assert channel_target(target) == target


def test_service_lists_in_batches() -> None:
    class Many:
        async def walk(self, *filters: str):  # type: ignore[no-untyped-def]
            for i in range(250):
                yield Info(f"k{i:03}", Kind.ACTIVE)

    api = SnapshotsAPI(SnapshotsService({"m": Many()}, None))  # type: ignore[dict-item]

    async def collect() -> list[int]:
        req = pb.ListSnapshotsRequest(snapshotter="m")
        return [len(r.info) async for r in api.list(req, Call())]

    assert run(collect()) == [100, 100, 50]
