"""Running CNI plugins (fake ones): the protocol, the bounds, rollback, the cache.

The plugins here are small shell scripts that log what they were given
(their CNI_* environment and their stdin) and print a configured result or
error; the network namespace is a plain file (the bind mount needs root and
a real process, and is proved in tests/integration/test_cni.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import cni, errdefs
from pycontainerd.cni import _netns, network
from pycontainerd.cni._invoke import find_plugin, run_plugin

pytestmark = pytest.mark.unit

PLUGIN = """#!/bin/sh
name=$(basename "$0")
dir=$(dirname "$0")
input=$(cat)
printf '%s\\n' "$(printf '{"plugin":"%s","command":"%s","id":"%s","netns":"%s","ifname":"%s",\
"args":"%s","path":"%s"}' "$name" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" \
"$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH")" >> "$dir/calls"
printf '%s\\n' "$input" >> "$dir/stdin"
if [ -f "$dir/$name.$CNI_COMMAND.fail" ]; then cat "$dir/$name.$CNI_COMMAND.fail"; exit 1; fi
if [ "$CNI_COMMAND" = ADD ] && [ -f "$dir/$name.out" ]; then cat "$dir/$name.out"; fi
exit 0
"""


def result(address: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "x"}],
        "ips": [{"address": address, "interface": 0}],
    }


class Plugins:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()

    def add(self, name: str, out: dict[str, Any] | None = None) -> None:
        path = self.bin / name
        path.write_text(PLUGIN)
        path.chmod(0o755)
        if out is not None:
            (self.bin / f"{name}.out").write_text(json.dumps(out))

    def fail(self, name: str, command: str, code: int, msg: str) -> None:
        error = {"cniVersion": "1.0.0", "code": code, "msg": msg}
        (self.bin / f"{name}.{command}.fail").write_text(json.dumps(error))

    def calls(self) -> list[dict[str, str]]:
        path = self.bin / "calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stdins(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.bin / "stdin").read_text().splitlines()]


@pytest.fixture
def fake_netns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Path]]]:
    """Namespaces as plain files; the calls recorded."""
    calls: list[tuple[str, Path]] = []

    def create(path: Path, pid: int) -> None:
        calls.append(("create", path))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o444)
        except FileExistsError as exc:
            raise errdefs.AlreadyExists(f"{path}: already exists") from exc
        os.close(fd)

    def remove(path: Path) -> None:
        calls.append(("remove", path))
        path.unlink(missing_ok=True)

    monkeypatch.setattr(_netns, "create", create)
    monkeypatch.setattr(_netns, "remove", remove)
    monkeypatch.setattr(_netns, "is_mounted", lambda path: path.exists())
    yield calls


def make_network(
    tmp_path: Path, plugins: Plugins, *types: str, version: str = "1.0.0"
) -> cni.Network:
    doc = {
        "cniVersion": version,
        "name": "testnet",
        "plugins": [
            {"type": t, "capabilities": {"portMappings": True}} if t == "portmap" else {"type": t}
            for t in types
        ],
    }
    return cni.Network(
        cni.parse_conflist(json.dumps(doc)),
        [str(tmp_path / "empty"), str(plugins.bin)],
        netns_dir=tmp_path / "netns",
        cache_dir=tmp_path / "cache",
    )


def test_setup_chains_the_plugins_and_remove_undoes_them_in_reverse(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.2/24"))
    plugins.add("portmap", result("10.4.0.2/24") | {"dns": {"nameservers": ["1.1.1.1"]}})
    net = make_network(tmp_path, plugins, "bridge", "portmap")
    netns = tmp_path / "netns" / "pycontainerd-ns1-c1"

    got = net.setup(
        "c1",
        1234,
        namespace="ns1",
        port_mappings=[cni.PortMapping(8080, 80)],
        args={"IgnoreUnknown": "1", "K8S_POD_NAME": "p"},
    )
    assert [str(ip) for ip in got.ips] == ["10.4.0.2/24"]
    assert got.dns.nameservers == ("1.1.1.1",)
    assert got.netns == str(netns)
    path = f"{tmp_path / 'empty'}:{plugins.bin}"
    common = {"id": "ns1-c1", "netns": str(netns), "ifname": "eth0", "path": path,
              "args": "IgnoreUnknown=1;K8S_POD_NAME=p"}  # fmt: skip
    assert plugins.calls() == [
        {"plugin": "bridge", "command": "ADD", **common},
        {"plugin": "portmap", "command": "ADD", **common},
    ]
    first, second = plugins.stdins()
    assert first == {"type": "bridge", "name": "testnet", "cniVersion": "1.0.0"}
    # The second gets the first's result, and the port mappings it asked for.
    assert second["prevResult"] == result("10.4.0.2/24")
    assert second["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    }
    cache = json.loads((tmp_path / "cache" / "ns1-c1.json").read_text())
    assert cache["result"]["dns"] == {"nameservers": ["1.1.1.1"]}
    assert cache["config"]["plugins"][0] == {"type": "bridge"}
    assert netns.exists()

    net.remove("c1", namespace="ns1")
    calls = plugins.calls()[2:]
    assert [(c["plugin"], c["command"]) for c in calls] == [("portmap", "DEL"), ("bridge", "DEL")]
    assert all(c["netns"] == str(netns) for c in calls)
    dels = plugins.stdins()[2:]
    assert all(d["prevResult"]["dns"] == {"nameservers": ["1.1.1.1"]} for d in dels)
    assert dels[0]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert "runtimeConfig" not in dels[1]
    assert not netns.exists()
    assert list((tmp_path / "cache").iterdir()) == []

    net.remove("c1", namespace="ns1")  # again: nothing left, nothing run
    assert len(plugins.calls()) == 4


def test_remove_uses_the_cached_config_not_todays(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.3/24"))
    plugins.add("other", result("10.4.0.3/24"))
    make_network(tmp_path, plugins, "bridge").setup("c2", 1)
    make_network(tmp_path, plugins, "other").remove("c2")
    assert [(c["plugin"], c["command"]) for c in plugins.calls()] == [
        ("bridge", "ADD"),
        ("bridge", "DEL"),
    ]


def test_before_0_4_0_del_gets_no_prev_result(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.4/24") | {"cniVersion": "0.3.1"})
    net = make_network(tmp_path, plugins, "bridge", version="0.3.1")
    net.setup("c3", 1)
    net.check("c3")  # CHECK is 0.4.0's: nothing runs
    net.remove("c3")
    assert [c["command"] for c in plugins.calls()] == ["ADD", "DEL"]
    assert "prevResult" not in plugins.stdins()[1]


def test_check_runs_each_plugin_with_the_cached_result(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.5/24"))
    net = make_network(tmp_path, plugins, "bridge")
    with pytest.raises(errdefs.NotFound):
        net.check("c4")
    net.setup("c4", 1)
    net.check("c4")
    assert plugins.calls()[-1]["command"] == "CHECK"
    assert plugins.stdins()[-1]["prevResult"] == result("10.4.0.5/24")
    plugins.fail("bridge", "CHECK", 3, "eth0 is gone")
    with pytest.raises(errdefs.NotFound, match="eth0 is gone"):
        net.check("c4")
    net.remove("c4")


def test_failed_add_is_rolled_back_and_raises_the_plugins_error(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.6/24"))
    plugins.add("firewall")
    plugins.fail("firewall", "ADD", 7, "no such chain")
    net = make_network(tmp_path, plugins, "bridge", "firewall")
    with pytest.raises(
        errdefs.InvalidArgument, match=r"cni plugin firewall failed \(ADD\): no such chain"
    ):
        net.setup("c5", 1)
    assert [(c["plugin"], c["command"]) for c in plugins.calls()] == [
        ("bridge", "ADD"),
        ("firewall", "ADD"),
        ("firewall", "DEL"),
        ("bridge", "DEL"),
    ]
    assert plugins.stdins()[3]["prevResult"] == result("10.4.0.6/24")
    assert not (tmp_path / "netns" / "pycontainerd-c5").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_plugin_is_not_found_and_rolled_back(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    net = make_network(tmp_path, plugins, "nosuch")
    with pytest.raises(errdefs.NotFound, match='failed to find plugin "nosuch"'):
        net.setup("c6", 1)
    # The rollback's DEL failed the same way: what is left can be removed
    # once the plugin is there.
    assert (tmp_path / "netns" / "pycontainerd-c6").exists()
    plugins.add("nosuch")
    net.remove("c6")
    assert not (tmp_path / "netns" / "pycontainerd-c6").exists()


def test_a_failed_del_keeps_the_state_for_a_retry(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.7/24"))
    net = make_network(tmp_path, plugins, "bridge")
    net.setup("c7", 1)
    plugins.fail("bridge", "DEL", 11, "busy")
    with pytest.raises(errdefs.Unavailable, match="busy"):
        net.remove("c7")
    assert (tmp_path / "cache" / "c7.json").exists()
    (plugins.bin / "bridge.DEL.fail").unlink()
    net.remove("c7")
    assert not (tmp_path / "cache" / "c7.json").exists()


def test_setup_twice_is_already_exists(tmp_path: Path, fake_netns: list[tuple[str, Path]]) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.8/24"))
    net = make_network(tmp_path, plugins, "bridge")
    net.setup("c8", 1)
    with pytest.raises(errdefs.AlreadyExists):
        net.setup("c8", 1)
    assert [c["command"] for c in plugins.calls()] == ["ADD"]
    net.remove("c8")


def test_no_result_is_an_error(tmp_path: Path, fake_netns: list[tuple[str, Path]]) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("silent")
    with pytest.raises(errdefs.InvalidArgument, match="returned no result"):
        make_network(tmp_path, plugins, "silent").setup("c9", 1)


def test_a_damaged_cache_does_not_block_remove(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    plugins = Plugins(tmp_path)
    plugins.add("bridge", result("10.4.0.9/24"))
    net = make_network(tmp_path, plugins, "bridge")
    net.setup("c10", 1)
    (tmp_path / "cache" / "c10.json").write_text("{torn")
    net.remove("c10")
    assert plugins.calls()[-1]["command"] == "DEL"
    assert "prevResult" not in plugins.stdins()[-1]
    assert not (tmp_path / "netns" / "pycontainerd-c10").exists()
    assert not (tmp_path / "cache" / "c10.json").exists()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 77, "-x"])
def test_container_ids_are_validated_before_anything_runs(
    tmp_path: Path, fake_netns: list[tuple[str, Path]], bad: str
) -> None:
    plugins = Plugins(tmp_path)
    net = make_network(tmp_path, plugins, "bridge")
    with pytest.raises(errdefs.InvalidArgument):
        net.setup(bad, 1)
    with pytest.raises(errdefs.InvalidArgument):
        net.remove(bad)
    with pytest.raises(errdefs.InvalidArgument):
        net.setup("ok", 1, namespace=bad or "a b")
    assert fake_netns == []


def test_bad_port_mappings_and_args_are_invalid_argument(
    tmp_path: Path, fake_netns: list[tuple[str, Path]]
) -> None:
    net = make_network(tmp_path, Plugins(tmp_path), "bridge")
    with pytest.raises(errdefs.InvalidArgument, match="invalid port"):
        net.setup("c11", 1, port_mappings=[cni.PortMapping(0, 80)])
    with pytest.raises(errdefs.InvalidArgument, match="invalid protocol"):
        net.setup("c11", 1, port_mappings=[cni.PortMapping(80, 80, "icmp")])
    with pytest.raises(errdefs.InvalidArgument, match="CNI_ARGS"):
        net.setup("c11", 1, args={"A;B": "1"})
    with pytest.raises(errdefs.InvalidArgument, match="CNI_ARGS"):
        net.setup("c11", 1, args={"A": "1;B=2"})
    assert fake_netns == []


# -- the bounds of one plugin run ------------------------------------------


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _run(path: Path, *, timeout: float = 10, max_output: int = 1024, stdin: bytes = b"{}") -> bytes:
    return run_plugin(path, kind=path.name, command="ADD", env={"PATH": os.environ["PATH"]},
                      stdin=stdin, timeout=timeout, max_output=max_output)  # fmt: skip


def test_a_plugin_past_its_deadline_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    path = _script(tmp_path, "slow", f"sleep 60 & echo $! > {pidfile}; wait\n")
    start = time.monotonic()
    with pytest.raises(errdefs.DeadlineExceeded, match=r"did not finish within 0\.5s"):
        _run(path, timeout=0.5)
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the plugin's child outlived the kill"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_plugin_printing_past_the_cap_is_killed(tmp_path: Path) -> None:
    path = _script(tmp_path, "chatty", "yes\n")
    with pytest.raises(errdefs.ResourceExhausted, match="printed more than 1024 bytes"):
        _run(path)


def test_output_up_to_the_cap_is_returned(tmp_path: Path) -> None:
    path = _script(tmp_path, "exact", "cat >/dev/null; head -c 1024 /dev/zero\n")
    assert _run(path) == b"\0" * 1024


def test_a_plugin_that_never_reads_a_large_stdin_does_not_hang(tmp_path: Path) -> None:
    path = _script(tmp_path, "deaf", 'echo \'{"cniVersion":"1.0.0"}\'\n')
    assert _run(path, stdin=b" " * (4 << 20)) == b'{"cniVersion":"1.0.0"}\n'


def test_a_failing_plugin_gives_its_typed_error_with_stderr(tmp_path: Path) -> None:
    path = _script(tmp_path, "bad", "echo something broke >&2; exit 3\n")
    with pytest.raises(errdefs.Unknown, match="exit status 3: something broke"):
        _run(path)


def test_find_plugin_searches_the_dirs_in_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _script(tmp_path / "b", "bridge", "")
    (tmp_path / "a" / "bridge").write_text("not executable")
    assert find_plugin("bridge", (str(tmp_path / "a"), str(tmp_path / "b"))) == (
        tmp_path / "b" / "bridge"
    )
    with pytest.raises(errdefs.NotFound, match='failed to find plugin "loopback"'):
        find_plugin("loopback", (str(tmp_path / "a"),))


def test_the_bounds_are_the_documented_ones() -> None:
    assert network.PLUGIN_TIMEOUT == 60.0
    assert network.MAX_OUTPUT_SIZE == 1 << 20
    assert cni.DEFAULT_CONF_DIR == "/etc/cni/net.d"
    assert cni.DEFAULT_BIN_DIRS[0] == "/usr/lib/cni"


# -- resolv.conf ------------------------------------------------------------


def test_resolv_conf_prefers_systemd_resolveds_upstream_file(tmp_path: Path) -> None:
    systemd = tmp_path / "resolved.conf"
    systemd.write_text("nameserver 192.0.2.53\n")
    got = cni.resolve_conf_source(tmp_path / "data", systemd_resolv_conf=systemd,
                                  host_resolv_conf=tmp_path / "none")  # fmt: skip
    assert got == systemd
    assert not (tmp_path / "data").exists()


def test_resolv_conf_fallback_is_the_hosts_without_loopback_servers(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("# c\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\n"
                    "search example\noptions edns0\n")  # fmt: skip
    got = cni.resolve_conf_source(tmp_path / "data", systemd_resolv_conf=tmp_path / "missing",
                                  host_resolv_conf=host)  # fmt: skip
    assert got == tmp_path / "data" / "resolv.conf"
    assert got.read_text() == "# c\nnameserver 192.0.2.1\nsearch example\noptions edns0\n"
    assert got.stat().st_mode & 0o777 == 0o644
    host.write_text("x" * (65 * 1024))
    with pytest.raises(errdefs.InvalidArgument, match="larger than"):
        cni.resolve_conf_source(tmp_path / "data", systemd_resolv_conf=tmp_path / "missing",
                                host_resolv_conf=host)  # fmt: skip
