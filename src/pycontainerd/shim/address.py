"""Where a container's shim server listens: one server per (daemon,
namespace, pod), its socket named by a hash as containerd's
``SocketAddress`` names a Go shim's.

Shared by the entry point's ``start`` (which imports nothing heavy: ``os``
here, ``json`` only for a spec that names a pod) and the daemon, which finds
a live server itself instead of running ``start`` for it.
"""

from __future__ import annotations

import os

from pycontainerd.shim._layout import SOCKET_DIR

__all__ = ["GROUP_ANNOTATIONS", "group_of", "group_of_spec", "socket_path"]

#: The spec annotations that group a pod's containers into one shim server.
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID")
#: The most of a bundle's config.json read to find its pod.
MAX_SPEC = 8 << 20


def group_of_spec(data: bytes) -> str:
    """The grouping key of a serialized OCI spec: the pod's sandbox id when
    its annotations name one, else ``""`` (every container of the namespace
    in one server)."""
    # json costs an import on start's path; most specs carry no pod annotation.
    if not any(a.encode() in data for a in GROUP_ANNOTATIONS):
        return ""
    import json

    try:
        document = json.loads(data)
    except ValueError:
        return ""
    annotations = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(annotations, dict):
        return ""
    for name in GROUP_ANNOTATIONS:
        value = annotations.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def group_of(bundle: str, container_id: str) -> str:
    """The grouping key of the bundle's ``config.json`` (see :func:`group_of_spec`)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            data = f.read(MAX_SPEC)
    except OSError:
        return ""
    return group_of_spec(data)


def _sha256_hex(data: bytes) -> str:
    # hashlib loads OpenSSL (3 ms, a tenth of start); CPython's own sha256
    # module gives the same digest without it.
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def socket_path(address: str, namespace: str, group: str) -> str:
    """The server's socket for (daemon, namespace, group): a hash, as
    containerd's ``SocketAddress``, in a domain of our own (no Go shim's
    socket can share it)."""
    key = "\0".join(("pyrunc", address, namespace, group))
    return f"{SOCKET_DIR}/{_sha256_hex(key.encode())}"
