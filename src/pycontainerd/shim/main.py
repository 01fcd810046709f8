"""``containerd-shim-pyrunc-v2``: the entry point containerd runs.

Three actions, as containerd's shim v2 binary protocol has them (run with
the bundle as the working directory):

``start``
    Print the address of the shim server for this container's group,
    spawning that server if none is live.  This is on every ``ctr run``'s
    path, so it imports only ``os``, ``sys``, ``socket``, ``fcntl`` and
    ``hashlib`` (about 15 ms on an interpreter start): the live-server path
    is a ``connect`` and a ``print``.
``delete``
    Clean up after a container whose shim connection is gone: ask its
    server (if one is live) to kill and delete it, or, failing that, run
    ``runc delete --force`` and unmount its rootfs; print a
    ``DeleteResponse``.
(none)
    Serve: the long-lived shim server (:mod:`pycontainerd.shim.server`), on
    the listening socket ``start`` handed it as fd 3.

Flags are Go's ``flag`` package's (``-namespace ns``, ``--namespace=ns``):
``-namespace``, ``-id``, ``-address``, ``-publish-binary``, ``-bundle``,
``-socket``, ``-debug``, ``-v``; the environment carries ``TTRPC_ADDRESS``,
``GRPC_ADDRESS`` and ``NAMESPACE``.
"""

from __future__ import annotations

import _socket
import os
import sys

from pycontainerd.shim._group import lock_group, remove_group
from pycontainerd.shim._layout import (
    ADDRESS_FILE,
    CLEANUP_SERVICE,
    INIT_PID_FILE,
    OPTIONS_FILE,
    RUNC_ROOT,
    SOCKET_DIR,
)
from pycontainerd.shim.address import group_of, socket_path

__all__ = ["group_of", "main", "socket_path"]

#: Bytes of runtime options read from stdin at most.
MAX_OPTIONS = 1 << 20

_BOOL_FLAGS = frozenset({"debug", "v"})
_VALUE_FLAGS = frozenset({"namespace", "id", "address", "publish-binary", "bundle", "socket"})


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[dict[str, str], str]:
    """Go-``flag`` style flags, then the action (``""`` to serve)."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in _BOOL_FLAGS:
            flags[name] = "false" if value in ("false", "0") else "true"
        elif name in _VALUE_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            flags[name] = value
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments: {rest[1:]}")
    return flags, (rest[0] if rest else "")


# --- the socket address ---------------------------------------------------------------------


def _unix_socket() -> _socket.socket:
    # The C module: ``socket``'s wrapper (enums, selectors) costs 2 ms to import.
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)


def _can_connect(path: str) -> bool:
    s = _unix_socket()
    try:
        s.settimeout(2)
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


# --- protobuf, the few fields the entry point needs ------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def proto_fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Decode one message's fields by number (varints and length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def shim_cgroup_of(options: bytes) -> str:
    """``ShimCgroup`` of the runtime options containerd writes to ``start``'s
    stdin (a ``google.protobuf.Any`` of ``containerd.runc.v1.Options``)."""
    if not options:
        return ""
    any_ = proto_fields(options)
    url = any_.get(1, [b""])[0]
    if url not in (
        b"containerd.runc.v1.Options",
        b"type.googleapis.com/containerd.runc.v1.Options",
    ):
        return ""
    value = any_.get(2, [b""])[0]
    cgroup = proto_fields(value if isinstance(value, bytes) else b"").get(3, [b""])[0]
    return cgroup.decode() if isinstance(cgroup, bytes) else ""


def delete_response(pid: int, exit_status: int, exited_ns: int) -> bytes:
    """A ``DeleteResponse`` (pid 1, exit_status 2, exited_at 3)."""
    stamp = _field_varint(1, exited_ns // 1_000_000_000) + _field_varint(
        2, exited_ns % 1_000_000_000
    )
    return _field_varint(1, pid) + _field_varint(2, exit_status) + _field_bytes(3, stamp)


# --- start ------------------------------------------------------------------------------------


def _spawn_server(sock_fd: int, flags: dict[str, str], log_path: str) -> int:
    """The server: this interpreter on this script, no action, the listening
    socket as fd 3, in its own session, stdio away from containerd's pipes."""
    script = os.path.abspath(sys.argv[0])
    argv = [sys.executable, script]
    for name in ("namespace", "id", "address", "publish-binary"):
        if name in flags:
            argv += [f"-{name}", flags[name]]
    if flags.get("debug") == "true":
        argv.append("-debug")
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        return os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, devnull, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
                (os.POSIX_SPAWN_DUP2, sock_fd, 3),
            ],
            setsid=True,
        )
    finally:
        os.close(devnull)
        os.close(log)


def _join_cgroup(pid: int, cgroup: str) -> None:
    """Move the server into ``ShimCgroup`` (v2, or every v1 hierarchy)."""
    cgroup = cgroup.strip("/")
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        targets = [f"/sys/fs/cgroup/{cgroup}"]
    else:
        targets = [
            f"/sys/fs/cgroup/{name}/{cgroup}"
            for name in os.listdir("/sys/fs/cgroup")
            if os.path.isdir(f"/sys/fs/cgroup/{name}")
            and not os.path.islink(f"/sys/fs/cgroup/{name}")
        ]
    for target in targets:
        os.makedirs(target, exist_ok=True)
        with open(f"{target}/cgroup.procs", "w") as f:
            f.write(str(pid))


def start(flags: dict[str, str]) -> str:
    """Find or spawn the server for this container's group; its address."""
    namespace = flags.get("namespace", "")
    bundle = os.getcwd()
    options = sys.stdin.buffer.read(MAX_OPTIONS) if not sys.stdin.isatty() else b""
    path = socket_path(flags.get("address", ""), namespace, group_of(bundle, flags.get("id", "")))
    address = "unix://" + path
    os.makedirs(SOCKET_DIR, mode=0o711, exist_ok=True)
    # One start at a time per group: the check-then-spawn must not race.
    lock = lock_group(path)
    try:
        if not (os.path.exists(path) and _can_connect(path)):
            if os.path.lexists(path):
                os.unlink(path)  # a dead server's socket
            sock = _unix_socket()
            try:
                sock.bind(path)
                sock.listen(1024)
                pid = _spawn_server(sock.fileno(), flags, path + ".log")
            finally:
                sock.close()
            cgroup = shim_cgroup_of(options)
            if cgroup:
                _join_cgroup(pid, cgroup)
    finally:
        os.close(lock)
    with open(ADDRESS_FILE, "w") as f:
        f.write(address)
    return address


# --- delete -----------------------------------------------------------------------------------


def _ask_server(address_file: str, container_id: str, namespace: str) -> bytes | None:
    """The DeleteResponse of the live server that holds ``container_id``
    (it kills and deletes it), or None when there is none to ask."""
    try:
        with open(address_file) as f:
            path = f.read().strip().removeprefix("unix://")
    except OSError:
        return None
    if not path.startswith(SOCKET_DIR + "/"):
        return None
    request = (
        _field_bytes(1, CLEANUP_SERVICE.encode())
        + _field_bytes(2, b"Delete")
        + _field_bytes(3, _field_bytes(1, container_id.encode()))
        + _field_varint(4, 10_000_000_000)
        + _field_bytes(
            5, _field_bytes(1, b"containerd-namespace-ttrpc") + _field_bytes(2, namespace.encode())
        )
    )
    s = _unix_socket()
    try:
        s.settimeout(12)
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            _remove_dead_group(path)
            return None
        # ttrpc's frame header: length, stream id 1, type 1 (request), no flags.
        s.sendall(len(request).to_bytes(4, "big") + b"\0\0\0\1\1\0" + request)
        header = b""
        while len(header) < 10:
            chunk = s.recv(10 - len(header))
            if not chunk:
                return None
            header += chunk
        length = int.from_bytes(header[:4], "big")
        data = b""
        while len(data) < length:
            chunk = s.recv(length - len(data))
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    finally:
        s.close()
    response = proto_fields(data)
    status = response.get(1, [b""])[0]
    if isinstance(status, bytes) and proto_fields(status).get(1, [0])[0]:
        return None  # the server does not hold it (or failed): clean up here
    payload = response.get(2, [b""])[0]
    return payload if isinstance(payload, bytes) else b""


def _remove_dead_group(path: str) -> None:
    """The server at ``path`` is dead (killed: it removes its own files when
    it leaves): remove its socket, log and lock, unless a ``start`` made a
    new server there meanwhile.  Nothing else would, and a host that runs
    many short-lived namespaces would gather them in :data:`SOCKET_DIR`."""
    lock = lock_group(path)
    try:
        if not _can_connect(path):
            remove_group(path)
    finally:
        os.close(lock)


def delete(flags: dict[str, str]) -> bytes:
    """Clean up after a container whose shim connection is gone."""
    import time

    container_id = flags.get("id", "")
    namespace = flags.get("namespace", "")
    bundle = flags.get("bundle") or os.getcwd()
    answered = _ask_server(os.path.join(bundle, ADDRESS_FILE), container_id, namespace)
    if answered is not None:
        return answered
    options: dict[str, object] = {}
    if os.path.exists(os.path.join(bundle, OPTIONS_FILE)):
        import json

        try:
            with open(os.path.join(bundle, OPTIONS_FILE)) as f:
                options = json.load(f)
        except (OSError, ValueError):
            pass
    root = os.path.join(str(options.get("root") or RUNC_ROOT), namespace)
    binary = str(options.get("binary_name") or "runc")
    if os.path.exists(os.path.join(root, container_id)):
        import subprocess

        argv = [binary, "--root", root, "delete", "--force", container_id]
        subprocess.run(argv, capture_output=True, check=False, timeout=30)
    rootfs = os.path.join(bundle, "rootfs")
    if os.path.ismount(rootfs):
        from pycontainerd import mount

        mount.unmount_all(rootfs)
    pid = 0
    try:
        with open(os.path.join(bundle, INIT_PID_FILE)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    return delete_response(pid, 128 + 9, time.time_ns())


def main(argv: list[str] | None = None) -> int:
    try:
        flags, action = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"containerd-shim-pyrunc-v2: {exc}", file=sys.stderr)
        return 2
    if flags.get("v") == "true":
        from pycontainerd.version import VERSION

        print(f"containerd-shim-pyrunc-v2:\n  Version:  {VERSION}")
        return 0
    if not flags.get("namespace"):
        flags["namespace"] = os.environ.get("NAMESPACE", "")
    if not flags["namespace"]:
        print("containerd-shim-pyrunc-v2: shim namespace cannot be empty", file=sys.stderr)
        return 1
    try:
        if action == "start":
            sys.stdout.write(start(flags))
            sys.stdout.flush()
        elif action == "delete":
            sys.stdout.buffer.write(delete(flags))
            sys.stdout.flush()
        elif action == "":
            # asyncio imports ssl if it can, mapping OpenSSL (4-5 MB of RSS in
            # every server); the shim speaks only unix sockets.
            sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
            from pycontainerd.shim.server import serve

            serve(flags)
        else:
            print(f"containerd-shim-pyrunc-v2: unknown action {action!r}", file=sys.stderr)
            return 1
    except Exception as exc:
        print(f"containerd-shim-pyrunc-v2: {action or 'serve'}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
