"""`make demo`: start pycontainerd with its default config and show it working.

The daemon runs on a private temp root, state and socket (so it never
touches a containerd or pycontainerd the host already runs), each step runs
the real `pyctr` and Debian's `ctr` against it, and the daemon is stopped
and cleaned up at the end.  It grows with every capability the project adds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.daemons import stop, wait_serving  # noqa: E402


def step(title: str, *argv: str, env: dict[str, str] | None = None) -> None:
    print(f"\n$ {shlex.join(argv)}    # {title}", flush=True)
    subprocess.run(argv, check=False, env=env)


def busybox_rootfs(where: Path) -> Path:
    """A tiny rootfs: Debian's static busybox and a few of its applets."""
    (where / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", where / "bin" / "busybox")
    for applet in ("sh", "ls", "echo", "cat"):
        (where / "bin" / applet).symlink_to("busybox")
    (where / "etc").mkdir()
    (where / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return where


def image_demo(base: Path, pyctr: str, sock: str, env: dict[str, str]) -> None:
    """An image from a plain directory, unpacked, mounted, exported, run on."""
    rootfs = busybox_rootfs(base / "busybox")
    image = "docker.io/library/demo-busybox:latest"
    step("an image from a plain directory (like docker import), unpacked",
         pyctr, "images", "import", "--from-rootfs", str(rootfs), image,
         "--config-cmd", "sh", env=env)
    step("list images", pyctr, "images", "ls", env=env)
    step("its layer, a committed snapshot", pyctr, "snapshots", "ls", env=env)
    target = base / "mnt"
    target.mkdir()
    step("mount its rootfs", pyctr, "images", "mount", image, str(target), env=env)
    step("look inside", "ls", str(target / "bin"))
    step("unmount it", pyctr, "images", "unmount", "--rm", str(target), env=env)
    archive = base / "demo.tar"
    step("export it as an OCI archive", pyctr, "images", "export", str(archive), image, env=env)
    step("remove it: content and snapshots are collected", pyctr, "images", "rm", "--sync",
         image, env=env)
    step("import the archive back, with containerd's ctr", "ctr", "-a", sock, "images",
         "import", str(archive))
    step("a container on a new snapshot of the image", pyctr, "containers", "create",
         image, "demo2", env=env)
    step("its snapshot", pyctr, "snapshots", "info", "demo2", env=env)
    step("remove the container (and its snapshot)", pyctr, "containers", "rm", "demo2", env=env)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="pcd-demo-", dir="/tmp"))
    sock = str(base / "pycontainerd.sock")
    log = base / "daemon.log"
    cmd = [str(BIN / "pycontainerd"), "--root", str(base / "root"), "--state", str(base / "state"),
           "--address", sock, "--config", str(base / "none.toml")]
    print(f"starting: {shlex.join(cmd)}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(sock, proc, log)
        env = dict(os.environ, CONTAINERD_ADDRESS=sock)
        pyctr = str(BIN / "pyctr")
        step("who is serving", pyctr, "version", env=env)
        step("the daemon's plugins", pyctr, "plugins", "ls", env=env)
        events = subprocess.Popen([pyctr, "events"], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        step("a labelled namespace", pyctr, "namespaces", "create", "demo", "team=infra", env=env)
        step("add a label", pyctr, "namespaces", "label", "demo", "tier=gold", env=env)
        step("list namespaces", pyctr, "namespaces", "ls", env=env)
        step("remove it", pyctr, "namespaces", "rm", "demo", env=env)
        blob = base / "hello.txt"
        blob.write_bytes(b"hello from pycontainerd\n")
        print(f"\n$ pyctr content ingest hello < {blob}    # store a blob, verified")
        with open(blob, "rb") as f:
            subprocess.run([pyctr, "content", "ingest", "hello"], stdin=f, env=env, check=False)
        step("the blob, content-addressed", pyctr, "content", "ls", env=env)
        rootfs = base / "rootfs"
        rootfs.mkdir()
        step("a container record over a rootfs", pyctr, "containers", "create", "--rootfs",
             str(rootfs), "demo1", "sh", env=env)
        step("list containers", pyctr, "containers", "ls", env=env)
        step("with ctr, too", "ctr", "-a", sock, "containers", "ls")
        step("remove it", pyctr, "containers", "rm", "demo1", env=env)
        image_demo(base, pyctr, sock, env)
        time.sleep(0.3)
        events.terminate()
        print("\n$ pyctr events    # what a subscriber saw meanwhile")
        print(events.communicate(timeout=5)[0], end="")
        if shutil.which("ctr"):
            step("containerd's own ctr talks to us too", "ctr", "-a", sock, "version")
        step("and, last, a container runs and greets you (its exit code is pyctr's)",
             pyctr, "run", "--rm", "docker.io/library/demo-busybox:latest", "greeter",
             "echo", "Hello from a container run by pycontainerd!", env=env)
        return 0
    finally:
        code = stop(proc)
        print(f"\ndaemon stopped (exit {code})")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
