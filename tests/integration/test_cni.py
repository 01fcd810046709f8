"""CNI networking with Debian's plugins and real runc (issue 13).

Every test runs on a network of its own: a private conf dir naming a bridge
``pyct<random>`` on an unused ``10.213.<random>.0/24``, host-local's
allocations in a private ``dataDir`` (never the host's /var/lib/cni), and
the library's namespaces and caches under the test's temp dir.  The bridge
and whatever a failed test left (namespace mounts, veths, portmap's
iptables chains) are removed at the end, and IPv4 forwarding (which the
bridge plugin turns on for a gateway) is set back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shlex
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycontainerd import cni, errdefs
from tests.integration._cli import Cli, table
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks

pytestmark = pytest.mark.integration

IMAGE = "docker.io/library/cni:test"
APPLETS = ("sh", "sleep", "ping", "ip", "cat", "true", "echo", "nc")
BUSYBOX = "/bin/busybox"
PLUGIN_DIR = "/usr/lib/cni"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _layer() -> bytes:
    """busybox with the network applets the tests run."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pyctr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    if not Path(PLUGIN_DIR, "bridge").exists():
        pytest.fail(
            "CNI plugins are not installed (make deps installs containernetworking-plugins)"
        )
    archive = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(archive, IMAGE, _layer())
    ns = tasks.namespace()
    with tasks.daemon("", [ns]) as d:
        cli = Cli("pyctr", d.address, ns)
        cli("images", "import", str(archive))
        yield cli


@dataclass
class PrivateNet:
    root: Path
    name: str
    bridge: str
    prefix: str  # "10.213.X."

    @property
    def conf_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    def load(self) -> cni.Network:
        return cni.Network.load(
            self.conf_dir,
            (PLUGIN_DIR,),
            netns_dir=self.root / "netns",
            cache_dir=self.root / "cache",
        )

    def veths(self) -> list[str]:
        out = subprocess.run(["ip", "-o", "link", "show", "master", self.bridge],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def allocations(self) -> list[str]:
        """host-local's reserved IPs (one file per address)."""
        directory = self.ipam_dir / self.name
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.name.startswith(self.prefix))


def _free_prefix() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for _ in range(100):
        prefix = f"10.213.{random.randrange(1, 255)}."
        if prefix not in routes:
            return prefix
    pytest.fail("no free 10.213.x.0/24")


def _mounts_under(root: Path) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(f"{root}/")
    ]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[PrivateNet]:
    suffix = uuid.uuid4().hex[:8]
    test_net = PrivateNet(tmp_path, f"pyct-{suffix}", f"pyct{suffix}", _free_prefix())
    test_net.conf_dir.mkdir()
    conflist = {
        "cniVersion": "1.0.0",
        "name": test_net.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": test_net.bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": f"{test_net.prefix}0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(test_net.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (test_net.conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    # The bridge plugin turns forwarding on for a gateway; the host gets its setting back.
    forwarding = IP_FORWARD.read_text()
    try:
        yield test_net
    finally:
        IP_FORWARD.write_text(forwarding)
        for point in _mounts_under(tmp_path):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", test_net.bridge], capture_output=True, check=False)


def _pid(pyctr: Cli, task: str) -> int:
    (row,) = [r for r in table(pyctr("tasks", "ls").stdout)[1:] if r[0] == task]
    return int(row[1])


def _ping_from_host(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUSYBOX, "ping", "-c1", "-W3", address],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


@contextlib.contextmanager
def _detached(pyctr: Cli, *ids: str) -> Iterator[None]:
    try:
        for container_id in ids:
            pyctr("run", "-d", IMAGE, container_id, "sleep", "300")
        yield
    finally:
        for container_id in ids:
            pyctr("tasks", "rm", "-f", container_id, ok=False)
            pyctr("containers", "rm", container_id, ok=False)


def _kill_and_delete(pyctr: Cli, task: str) -> None:
    pyctr("tasks", "kill", "-s", "SIGKILL", task)
    deadline = time.monotonic() + 10
    while pyctr("tasks", "rm", task, ok=False).returncode != 0:
        assert time.monotonic() < deadline, "the task did not stop"
        time.sleep(0.05)


def test_two_containers_reach_each_other_and_the_host_reaches_them(
    pyctr: Cli, net: PrivateNet
) -> None:
    network = net.load()
    ns = pyctr.namespace
    assert ns is not None
    with _detached(pyctr, "web", "client"):
        try:
            web = network.setup("web", _pid(pyctr, "web"), namespace=ns)
            client = network.setup("client", _pid(pyctr, "client"), namespace=ns)
            (web_ip,) = (str(ip.ip) for ip in web.ips)
            (client_ip,) = (str(ip.ip) for ip in client.ips)
            assert web_ip.startswith(net.prefix) and client_ip.startswith(net.prefix)
            assert web_ip != client_ip
            eth0 = [i for i in web.interfaces if i.name == "eth0"]
            assert eth0 and eth0[0].sandbox == str(net.root / "netns" / f"pycontainerd-{ns}-web")
            assert sorted(net.allocations()) == sorted([web_ip, client_ip])
            assert len(net.veths()) == 2

            ping = pyctr("tasks", "exec", "--exec-id", "p1", "client",
                         "ping", "-c1", "-W3", web_ip, ok=False)  # fmt: skip
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "1 packets received" in ping.stdout
            for address in (web_ip, client_ip):
                from_host = _ping_from_host(address)
                assert from_host.returncode == 0, from_host.stdout + from_host.stderr

            # A task that has died keeps its namespace (the bind mount) for DEL.
            _kill_and_delete(pyctr, "web")
            network.remove("web", namespace=ns)
            assert net.allocations() == [client_ip]
            assert len(net.veths()) == 1
            # And one still running loses its interface.
            network.remove("client", namespace=ns)
            out = pyctr("tasks", "exec", "--exec-id", "p2", "client", "ip", "-o", "link").stdout
            assert "eth0" not in out
        finally:
            network.remove("web", namespace=ns)
            network.remove("client", namespace=ns)

    assert net.allocations() == []
    assert net.veths() == []
    assert list((net.root / "netns").iterdir()) == []
    assert _mounts_under(net.root) == []
    assert list((net.root / "cache").iterdir()) == []
    network.remove("web", namespace=ns)  # twice is fine


def test_pyctr_run_cni_rm_end_to_end(pyctr: Cli, net: PrivateNet) -> None:
    ns = pyctr.namespace
    env = {"CNI_CONF_DIR": str(net.conf_dir), "CNI_PATH": PLUGIN_DIR}
    gateway = f"{net.prefix}1"
    script = f"ip -o -4 addr show eth0; ping -c1 -W3 {gateway} >/dev/null && echo reached; exit 7"
    argv = [pyctr.binary, "-a", pyctr.address, "-n", str(ns),
            "run", "--cni", "--rm", IMAGE, "netrun", "sh", "-c", script]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **env})  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert f"inet {net.prefix}" in proc.stdout
    assert "reached" in proc.stdout
    assert table(pyctr("containers", "ls", "-q").stdout) == []
    assert not Path(cni.DEFAULT_NETNS_DIR, f"pycontainerd-{ns}-netrun").exists()
    assert not Path(cni.DEFAULT_CACHE_DIR, f"{ns}-netrun.json").exists()
    assert net.allocations() == []
    assert net.veths() == []


def test_pyctr_run_cni_without_a_config_fails_clearly(pyctr: Cli, tmp_path: Path) -> None:
    argv = [pyctr.binary, "-a", pyctr.address, "-n", str(pyctr.namespace),
            "run", "--cni", "--rm", IMAGE, "nonet", "true"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "CNI_CONF_DIR": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 1
    assert "no network config found in" in proc.stderr
    assert table(pyctr("containers", "ls", "-q").stdout) == []


def _nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _remove_idle_portmap_chains() -> None:
    """portmap's shared chains and their jumps, once no container's DNAT is left.

    The plugin makes them on first use and never removes them; a test must
    not leave them behind on the host.  A concurrent user's chains
    (``CNI-DN-...``) keep them in place.
    """
    rules = _nat_rules()
    if ":CNI-DN-" in rules:
        return
    for line in rules.splitlines():
        if line.startswith("-A ") and "-j CNI-HOSTPORT-" in line and not line.startswith("-A CNI-"):
            subprocess.run(["iptables", "-t", "nat", "-D", *shlex.split(line)[1:]],
                           capture_output=True, check=False)  # fmt: skip
    for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True, check=False)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True, check=False)


def test_portmap_forwards_a_host_port_and_remove_takes_its_rules(
    pyctr: Cli, net: PrivateNet
) -> None:
    if shutil.which("iptables") is None:
        pytest.fail("iptables is not installed (make deps installs it)")
    network = net.load()
    ns = pyctr.namespace
    assert ns is not None
    host_port = random.randrange(20000, 40000)
    gateway = f"{net.prefix}1"
    try:
        pyctr("run", "-d", IMAGE, "srv", "nc", "-ll", "-p", "8080", "-e", "echo", "pong")
        result = network.setup("srv", _pid(pyctr, "srv"), namespace=ns,
                               port_mappings=[cni.PortMapping(host_port, 8080)])  # fmt: skip
        assert f'id: \\"{ns}-srv\\"' in _nat_rules()
        deadline = time.monotonic() + 15
        while True:
            reply = subprocess.run([BUSYBOX, "nc", "-w", "3", gateway, str(host_port)],
                                   input="", capture_output=True, text=True, timeout=30,
                                   check=False)  # fmt: skip
            if reply.stdout == "pong\n":
                break
            assert time.monotonic() < deadline, (reply, result)
            time.sleep(0.2)
        network.remove("srv", namespace=ns)
        assert f"{ns}-srv" not in _nat_rules()
        assert f"--dport {host_port}" not in _nat_rules()
    finally:
        network.remove("srv", namespace=ns)
        pyctr("tasks", "rm", "-f", "srv", ok=False)
        pyctr("containers", "rm", "srv", ok=False)
        _remove_idle_portmap_chains()
    assert "CNI-HOSTPORT" not in _nat_rules() or ":CNI-DN-" in _nat_rules()


def test_setup_refuses_the_hosts_namespace_and_a_dead_pid(net: PrivateNet) -> None:
    network = net.load()
    with pytest.raises(errdefs.FailedPrecondition, match="host's network namespace"):
        network.setup("hostnet", os.getpid())
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(errdefs.NotFound, match=f"process {dead.pid}"):
        network.setup("gone", dead.pid)
    assert not (net.root / "netns").exists() or list((net.root / "netns").iterdir()) == []
    assert not (net.root / "cache").exists()
    assert net.allocations() == []


def test_run_d_cni_keeps_the_network_and_a_new_run_of_the_id_clears_it(
    pyctr: Cli, net: PrivateNet
) -> None:
    ns = str(pyctr.namespace)
    env = {**os.environ, "CNI_CONF_DIR": str(net.conf_dir), "CNI_PATH": PLUGIN_DIR}
    base = [pyctr.binary, "-a", pyctr.address, "-n", ns, "run", "--cni"]
    netns = Path(cni.DEFAULT_NETNS_DIR, f"pycontainerd-{ns}-det")
    try:
        subprocess.run([*base, "-d", IMAGE, "det", "sleep", "300"], check=True, env=env,
                       capture_output=True, timeout=60)  # fmt: skip
        assert netns.exists() and len(net.allocations()) == 1
        # As ctr: removing a detached container leaves its network behind...
        _kill_and_delete(pyctr, "det")
        pyctr("containers", "rm", "det")
        assert netns.exists() and len(net.allocations()) == 1
        # ...until the id is run with --cni again.
        proc = subprocess.run([*base, "--rm", IMAGE, "det", "ip", "-o", "-4", "addr"],
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert f"inet {net.prefix}" in proc.stdout
        assert not netns.exists()
        assert net.allocations() == []
        assert net.veths() == []
    finally:
        pyctr("tasks", "rm", "-f", "det", ok=False)
        pyctr("containers", "rm", "det", ok=False)
        cni.Network.load(net.conf_dir, (PLUGIN_DIR,)).remove("det", namespace=ns)
