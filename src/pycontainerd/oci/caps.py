"""Linux capability names, as containerd's ``pkg/cap`` knows them.

:data:`KNOWN` lists the capabilities of Linux 5.9 by number (bit ``i`` of a
capability set is ``KNOWN[i]``).  :func:`current` is the effective set of
the calling process, which is what a privileged container gets: containerd's
``WithAllCurrentCapabilities`` reads it in the client, so a client that
runs without some capability (inside a container, say) never hands it on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT", "KNOWN", "current", "from_bitmap"]

#: Capabilities by number, up to Linux 5.9 (``CAP_CHECKPOINT_RESTORE`` = 40).
KNOWN: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

#: The capabilities of a container that asks for nothing else (containerd's
#: ``defaultUnixCaps``), in containerd's order.
DEFAULT: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def from_bitmap(bitmap: int) -> tuple[list[str], list[int]]:
    """The known names of the bits set in ``bitmap``, and the unknown bit numbers."""
    names: list[str] = []
    unknown: list[int] = []
    for bit in range(64):
        if bitmap >> bit & 1:
            if bit < len(KNOWN):
                names.append(KNOWN[bit])
            else:
                unknown.append(bit)
    return names, unknown


def current(status: Path = Path("/proc/self/status")) -> list[str]:
    """The known capabilities in this process's effective set (``CapEff``)."""
    # /proc/self/status is a few kilobytes; read whole.
    for line in status.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "CapEff":
            return from_bitmap(int(value.strip(), 16))[0]
    return []
