"""Our spec generator against the specs Debian's containerd stores for ctr.

For each set of ``ctr`` flags, ctr creates a container on Debian's
containerd (``ctr containers create``, or ``ctr run`` with a runtime that
does not exist, which stores the container and then fails to start a task:
nothing runs), ``ctr containers info --spec`` reads the spec back, and it
must equal, field by field, what :func:`oci.generate` makes from the
options ctr applies for those flags, in ctr's order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.oci import spec as oci
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.interop

NAMESPACE = "spec-flags"
IMAGE = "docker.io/library/spec-flags:test"
# ctr run needs a runtime name; one without a shim makes task creation fail
# after the container (and its spec) is stored.
NO_RUNTIME = "io.containerd.nope.v1"

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29:app\n"
IMAGE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "FOO=from-image", "KEEP=1"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo from image"],
        "WorkingDir": "/srv",
        "User": "app",
    },
}


@dataclass(frozen=True)
class Case:
    """ctr's flags (before ``REF ID``), the command after it, and our options."""

    id: str
    flags: list[str]
    opts: Callable[[str], list[oci.SpecOpt]]  # given the rootfs path
    command: tuple[str, ...] = ()
    run: bool = False  # ``ctr run`` (its flags: --cpus, --cgroup, --uidmap...)
    image: bool = False  # from IMAGE rather than --rootfs


def _root(rootfs: str) -> list[oci.SpecOpt]:
    return [oci.with_root_path(rootfs)]


def _host() -> str:
    return os.uname().nodename


def _net_host() -> list[oci.SpecOpt]:
    return [
        oci.with_host_namespace("network"),
        oci.with_host_hosts_file,
        oci.with_host_resolvconf,
        oci.with_env([f"HOSTNAME={_host()}"]),
    ]


def _image_opts(args: tuple[str, ...] = ()) -> oci.SpecOpt:
    return oci.with_image_config(IMAGE_CONFIG, args, passwd=PASSWD, group=GROUP)


CASES = [
    Case("default", [], lambda r: _root(r)),
    Case(
        "env",
        ["--env", "A=1", "--env", "B=2", "--env", "A=3"],
        lambda r: [oci.with_env(["A=1", "B=2", "A=3"]), *_root(r)],
    ),
    Case(
        "cwd-and-args",
        ["--cwd", "/work"],
        lambda r: [
            *_root(r),
            oci.with_process_args("sh", "-c", "echo hi"),
            oci.with_process_cwd("/work"),
        ],
        command=("sh", "-c", "echo hi"),
    ),
    Case(
        "tty",
        ["--tty", "--env", "TERM=vt100"],
        lambda r: [oci.with_env(["TERM=vt100"]), *_root(r), oci.with_tty],
    ),
    Case(
        "privileged",
        ["--privileged"],
        lambda r: [*_root(r), oci.with_privileged, oci.with_privileged_devices],
    ),
    Case("read-only", ["--read-only"], lambda r: [*_root(r), oci.with_readonly_rootfs]),
    Case(
        "memory-limit",
        ["--memory-limit", "268435456"],
        lambda r: [*_root(r), oci.with_memory_limit(268435456)],
    ),
    Case(
        "mounts",
        [
            "--mount",
            "type=bind,src=/tmp,dst=/host,options=rbind:ro",
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m",
        ],
        lambda r: [
            oci.with_mounts(
                [
                    {
                        "destination": "/host",
                        "type": "bind",
                        "source": "/tmp",
                        "options": ["rbind", "ro"],
                    },
                    {
                        "destination": "/scratch",
                        "type": "tmpfs",
                        "source": "tmpfs",
                        "options": ["size=1m"],
                    },
                ]
            ),
            *_root(r),
        ],
    ),
    Case("net-host", ["--net-host"], lambda r: [*_root(r), *_net_host()]),
    Case(
        "labels-and-annotations",
        ["--label", "l=v", "--label", "z=last", "--annotation", "an=av", "--annotation", "l=ann"],
        # ctr applies --annotation before the labels, which it also writes as annotations.
        lambda r: [
            *_root(r),
            oci.with_annotations({"an": "av", "l": "ann"}),
            oci.with_annotations({"l": "v", "z": "last"}),
        ],
    ),
    Case(
        "devices",
        ["--device", "/dev/null", "--device", "/dev/net"],
        lambda r: [*_root(r), oci.with_devices("/dev/null"), oci.with_devices("/dev/net")],
    ),
    Case(
        "capabilities",
        ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_CHOWN", "--cap-drop", "CAP_KILL"],
        lambda r: [
            *_root(r),
            oci.with_add_capabilities(["CAP_SYS_ADMIN", "CAP_CHOWN"]),
            oci.with_drop_capabilities(["CAP_KILL"]),
        ],
    ),
    Case("allow-new-privs", ["--allow-new-privs"], lambda r: [*_root(r), oci.with_new_privileges]),
    Case(
        "with-ns",
        ["--with-ns", "pid:/proc/1/ns/pid", "--with-ns", "user:/proc/1/ns/user"],
        lambda r: [
            *_root(r),
            oci.with_linux_namespace("pid", "/proc/1/ns/pid"),
            oci.with_linux_namespace("user", "/proc/1/ns/user"),
        ],
    ),
    Case(
        "rootfs-propagation",
        ["--rootfs-propagation", "rshared"],
        lambda r: [*_root(r), oci.with_rootfs_propagation("rshared")],
    ),
    Case(
        "combined",
        [
            "--env",
            "A=1",
            "--tty",
            "--privileged",
            "--net-host",
            "--cap-drop",
            "CAP_SYS_ADMIN",
            "--device",
            "/dev/null",
            "--memory-limit",
            "1000000",
            "--read-only",
            "--label",
            "k=v",
        ],
        lambda r: [
            oci.with_env(["A=1"]),
            *_root(r),
            oci.with_readonly_rootfs,
            oci.with_process_args("sh"),
            oci.with_tty,
            oci.with_privileged,
            oci.with_privileged_devices,
            *_net_host(),
            oci.with_drop_capabilities(["CAP_SYS_ADMIN"]),
            oci.with_memory_limit(1000000),
            oci.with_devices("/dev/null"),
            oci.with_annotations({"k": "v"}),
        ],
        command=("sh",),
    ),
    # The default seccomp profile follows the capabilities set before it.
    Case("seccomp", ["--seccomp"], lambda r: [*_root(r), oci.with_default_seccomp]),
    Case(
        "seccomp-with-caps",
        [
            "--seccomp",
            "--cap-add",
            "CAP_SYS_ADMIN",
            "--cap-add",
            "CAP_SYS_PTRACE",
            "--cap-drop",
            "CAP_SYS_CHROOT",
        ],
        lambda r: [
            *_root(r),
            oci.with_add_capabilities(["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]),
            oci.with_drop_capabilities(["CAP_SYS_CHROOT"]),
            oci.with_default_seccomp,
        ],
    ),
    Case(
        "seccomp-privileged",
        ["--seccomp", "--privileged"],
        lambda r: [
            *_root(r),
            oci.with_privileged,
            oci.with_privileged_devices,
            oci.with_default_seccomp,
        ],
    ),
    Case(
        "apparmor-profile",
        ["--apparmor-profile", "some-loaded-profile"],
        lambda r: [*_root(r), oci.with_apparmor_profile("some-loaded-profile")],
    ),
    # ctr run: --cpu-shares defaults to 1024 there, so every run spec has it.
    Case(
        "cpus",
        ["--cpus", "1.5"],
        lambda r: [*_root(r), oci.with_cpus(1.5), oci.with_cpu_shares(1024)],
        run=True,
    ),
    Case(
        "cpu-shares",
        ["--cpu-shares", "512"],
        lambda r: [*_root(r), oci.with_cpu_shares(512)],
        run=True,
    ),
    Case(
        "cpu-quota-period",
        ["--cpu-quota", "5000", "--cpu-period", "10000"],
        lambda r: [*_root(r), oci.with_cpu_shares(1024), oci.with_cpu_cfs(5000, 10000)],
        run=True,
    ),
    Case(
        "cgroup",
        ["--cgroup", "/my/group"],
        lambda r: [*_root(r), oci.with_cpu_shares(1024), oci.with_cgroup("/my/group")],
        run=True,
    ),
    Case(
        "no-cgroup",
        ["--cgroup", ""],
        lambda r: [*_root(r), oci.with_cpu_shares(1024), oci.with_cgroup("")],
        run=True,
    ),
    # From an image: its config (env merged, entrypoint + cmd, workdir, USER
    # resolved in its /etc/passwd and /etc/group).
    Case(
        "image",
        ["--env", "FOO=from-flag", "--cwd", "/tmp"],
        lambda r: [
            oci.with_env(["FOO=from-flag"]),
            _image_opts(),
            oci.with_process_args("id", "-u"),
            oci.with_process_cwd("/tmp"),
        ],
        command=("id", "-u"),
        image=True,
    ),
    Case(
        "image-user-namespace",
        ["--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536", "--env", "X=1"],
        lambda r: [
            oci.with_env(["X=1"]),
            _image_opts(),
            oci.with_user_namespace(
                [oci.parse_id_mapping("0:100000:65536")], [oci.parse_id_mapping("0:200000:65536")]
            ),
            oci.with_cpu_shares(1024),
        ],
        run=True,
        image=True,
    ),
]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image_archive(path: Path) -> Path:
    """An OCI archive of IMAGE: one layer with /etc/passwd, /etc/group, /srv."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("etc", "srv", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps(
        {**IMAGE_CONFIG, "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha256(blob),
                    "size": len(blob),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha256(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": IMAGE},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            *[("blobs/sha256/" + _sha256(d)[7:], d) for d in (blob, config, manifest)],
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def ctr(containerd: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    binary = shutil.which("ctr")
    assert binary is not None, "Debian's ctr is not installed"
    base = [binary, "-a", containerd.address, "-n", NAMESPACE]
    archive = _image_archive(tmp_path_factory.mktemp("spec-image") / "image.tar")
    subprocess.run([*base, "images", "import", str(archive)], check=True, capture_output=True)
    yield base
    subprocess.run([*base, "images", "rm", IMAGE], check=False, capture_output=True)


def _stored_spec(ctr: list[str], case: Case, rootfs: Path) -> dict[str, Any]:
    ref = IMAGE if case.image else str(rootfs)
    rootfs_flag = [] if case.image else ["--rootfs"]
    if case.run:
        argv = [*ctr, "run", "--runtime", NO_RUNTIME, *rootfs_flag, *case.flags, ref, case.id]
    else:
        argv = [*ctr, "containers", "create", *rootfs_flag, *case.flags, ref, case.id]
    # "--" keeps ctr from reading the command's own flags (sh -c) as its own.
    command = ["--", *case.command] if case.command else []
    result = subprocess.run([*argv, *command], capture_output=True, text=True)
    try:
        info = subprocess.run(
            [*ctr, "containers", "info", "--spec", case.id], capture_output=True, text=True
        )
        assert info.returncode == 0, f"ctr stored no container: {result.stderr}{info.stderr}"
        spec: dict[str, Any] = json.loads(info.stdout)
        return spec
    finally:
        subprocess.run([*ctr, "containers", "rm", case.id], check=False, capture_output=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generated_spec_matches_what_containerd_stores_for_ctr_flags(
    ctr: list[str], case: Case, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    theirs = _stored_spec(ctr, case, rootfs)
    ours = oci.generate(NAMESPACE, case.id, *case.opts(str(rootfs)))
    assert ours == theirs
    # Field order too: the JSON our client stores is the JSON ctr's client stores.
    assert json.dumps(ours) == json.dumps(theirs)


def test_packed_spec_is_byte_for_byte_what_ctr_stores(
    containerd: RunningDaemon, ctr: list[str], tmp_path: Path
) -> None:
    """Go's JSON escaping (``&``, ``<``, ``>``) and field order, on the wire."""
    from pycontainerd.client import Client

    rootfs = str(tmp_path)
    command = ("sh", "-c", "true && echo <é> 2>&1")
    flags = ["--tty", "--privileged", "--annotation", "b=2", "--label", "a=1", "--env", "X=&"]
    subprocess.run(
        [*ctr, "containers", "create", "--rootfs", *flags, rootfs, "bytes", "--", *command],
        check=True,
        capture_output=True,
    )
    ours = oci.generate(
        NAMESPACE,
        "bytes",
        oci.with_env(["X=&"]),
        oci.with_root_path(rootfs),
        oci.with_process_args(*command),
        oci.with_tty,
        oci.with_privileged,
        oci.with_privileged_devices,
        oci.with_annotations({"b": "2"}),
        oci.with_annotations({"a": "1"}),
    )
    try:
        with Client(containerd.address, NAMESPACE) as client:
            stored = client.containers.get("bytes").spec
    finally:
        subprocess.run([*ctr, "containers", "rm", "bytes"], check=False, capture_output=True)
    assert stored is not None
    assert stored.type_url == oci.TYPE_URL
    assert stored.value == oci.to_any(ours).value
