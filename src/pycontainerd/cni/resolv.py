"""Which ``resolv.conf`` a container on a CNI network should get.

With systemd-resolved, ``/etc/resolv.conf`` names its stub (127.0.0.53),
which answers only inside the host's network namespace; the file
``/run/systemd/resolve/resolv.conf`` lists the real upstream servers, so
that one is used when present.  Otherwise ``/etc/resolv.conf`` is copied to
``<data_dir>/resolv.conf`` (atomically, mode 0644) without its loopback
``nameserver`` lines, which a container in its own namespace cannot reach;
what is left is kept as it is (no public resolver is added).

Bound: ``/etc/resolv.conf`` is read up to :data:`MAX_RESOLV_CONF_SIZE` bytes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from pathlib import Path

from pycontainerd import errdefs

__all__ = ["HOST_RESOLV_CONF", "MAX_RESOLV_CONF_SIZE", "SYSTEMD_RESOLV_CONF", "resolve_conf_source"]

SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
#: Bytes of the host's resolv.conf read.
MAX_RESOLV_CONF_SIZE = 64 * 1024


def _is_loopback_nameserver(line: str) -> bool:
    fields = line.split()
    if len(fields) < 2 or fields[0] != "nameserver":
        return False
    try:
        return ipaddress.ip_address(fields[1].split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolve_conf_source(
    data_dir: str | os.PathLike[str],
    *,
    systemd_resolv_conf: Path = SYSTEMD_RESOLV_CONF,
    host_resolv_conf: Path = HOST_RESOLV_CONF,
) -> Path:
    """The file to bind-mount as a container's ``/etc/resolv.conf``."""
    if systemd_resolv_conf.is_file():
        return systemd_resolv_conf
    try:
        with open(host_resolv_conf, "rb") as f:
            data = f.read(MAX_RESOLV_CONF_SIZE + 1)
    except FileNotFoundError:
        data = b""
    if len(data) > MAX_RESOLV_CONF_SIZE:
        raise errdefs.InvalidArgument(
            f"{host_resolv_conf}: larger than {MAX_RESOLV_CONF_SIZE} bytes"
        )
    text = data.decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if not _is_loopback_nameserver(line)]
    content = ("\n".join(kept) + "\n" if kept else "").encode()
    target = Path(data_dir) / "resolv.conf"
    target.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".resolv.conf-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return target
