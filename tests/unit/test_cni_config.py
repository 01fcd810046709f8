"""CNI network configuration: conflists, single confs, the directory's pick, bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycontainerd import cni, errdefs
from pycontainerd.cni import config

pytestmark = pytest.mark.unit

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}}


def conflist(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {"cniVersion": "1.0.0", "name": "net1", "plugins": [BRIDGE, PORTMAP]}
    doc.update(overrides)
    return doc


def test_conflist_gives_plugins_in_order_with_their_capabilities() -> None:
    net = cni.parse_conflist(json.dumps(conflist(disableCheck=True)))
    assert (net.name, net.cni_version, net.version) == ("net1", "1.0.0", (1, 0, 0))
    assert [p.type for p in net.plugins] == ["bridge", "portmap"]
    assert net.plugins[0].raw["bridge"] == "cni0"
    assert net.plugins[1].capabilities == frozenset({"portMappings"})
    assert net.plugins[0].capabilities == frozenset()
    assert net.disable_check is True


def test_single_conf_becomes_a_list_of_one_plugin() -> None:
    net = cni.parse_conf(json.dumps({"cniVersion": "0.4.0", "name": "one", **BRIDGE}))
    assert [p.type for p in net.plugins] == ["bridge"]
    assert net.raw["plugins"][0]["bridge"] == "cni0"
    assert net.raw["name"] == "one"
    # What is cached is a conflist again.
    assert cni.parse_conflist(json.dumps(net.raw)).plugins == net.plugins


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (conflist(name=""), "no network name"),
        (conflist(name="-bad"), "invalid network name"),
        (conflist(name="a/b"), "invalid network name"),
        (conflist(cniVersion=""), "no cniVersion"),
        (conflist(cniVersion="1.0"), "invalid CNI version"),
        (conflist(plugins=[]), "no plugins"),
        (conflist(plugins="bridge"), "no plugins"),
        (conflist(plugins=[{"bridge": "x"}]), "a plugin has no type"),
        (conflist(plugins=["bridge"]), "not a JSON object"),
        (conflist(plugins=[{"type": "../../bin/sh"}]), "invalid plugin type"),
        (conflist(plugins=[{"type": ".."}]), "invalid plugin type"),
        (conflist(plugins=[BRIDGE] * (config.MAX_PLUGINS + 1)), "more than 32 plugins"),
        (conflist(disableCheck="yes"), "disableCheck is not a boolean"),
    ],
)
def test_invalid_conflist_is_invalid_argument(doc: object, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        cni.parse_conflist(json.dumps(doc))


@pytest.mark.parametrize("data", [b"{", b"[]", b"\xff\xfe"])
def test_not_a_json_object_is_invalid_argument(data: bytes) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        cni.parse_conflist(data)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    doc = conflist(padding="x" * config.MAX_CONFIG_SIZE)
    (tmp_path / "10-big.conflist").write_text(json.dumps(doc))
    with pytest.raises(errdefs.InvalidArgument, match="larger than 1048576 bytes"):
        cni.load_dir(tmp_path)


def test_directory_gives_its_first_config_in_lexical_order(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(json.dumps(conflist(name="b")))
    (tmp_path / "10-a.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "a", **BRIDGE}))
    (tmp_path / "00-notes.txt").write_text("not a config")
    (tmp_path / "05-dir.conflist").mkdir()
    net = cni.load_dir(tmp_path)
    assert (net.name, net.source) == ("a", str(tmp_path / "10-a.conf"))


def test_an_invalid_first_config_is_an_error_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "10-a.conflist").write_text("{broken")
    (tmp_path / "20-b.conflist").write_text(json.dumps(conflist()))
    with pytest.raises(errdefs.InvalidArgument, match=r"10-a\.conflist: invalid JSON"):
        cni.load_dir(tmp_path)


def test_empty_or_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="no network config found"):
        cni.load_dir(tmp_path)
    with pytest.raises(errdefs.NotFound, match="not found"):
        cni.load_dir(tmp_path / "missing")
    with pytest.raises(errdefs.NotFound):
        cni.Network.load(tmp_path)


def test_pyctr_reads_its_network_from_cni_conf_dir_and_cni_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycontainerd.cli.commands import run

    (tmp_path / "10-a.conflist").write_text(json.dumps(conflist(name="fromenv")))
    monkeypatch.setenv("CNI_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("CNI_PATH", "/x/bin::/y/bin")
    network = run._cni_network()
    assert (network.name, network.bin_dirs) == ("fromenv", ("/x/bin", "/y/bin"))
    assert network.netns_dir == Path(cni.DEFAULT_NETNS_DIR)
    monkeypatch.delenv("CNI_PATH")
    assert run._cni_network().bin_dirs == cni.DEFAULT_BIN_DIRS
    monkeypatch.setenv("CNI_CONF_DIR", str(tmp_path / "none"))
    with pytest.raises(errdefs.NotFound):
        run._cni_network()
