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
        time.sleep(0.3)
        events.terminate()
        print("\n$ pyctr events    # what a subscriber saw meanwhile")
        print(events.communicate(timeout=5)[0], end="")
        if shutil.which("ctr"):
            step("containerd's own ctr talks to us too", "ctr", "-a", sock, "version")
        return 0
    finally:
        code = stop(proc)
        print(f"\ndaemon stopped (exit {code})")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
