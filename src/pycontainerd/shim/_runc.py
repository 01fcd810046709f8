"""runc (or any runc-compatible binary, e.g. crun), driven as go-runc does.

Every command gets ``--root``, ``--log <bundle>/log.json --log-format
json`` (and ``--systemd-cgroup`` when asked), so a failure's reason is the
last ``error`` line runc logged; stdout is read as it comes (``ps`` and
``state`` answer there), never after the exit, so a long answer cannot
block the command.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pycontainerd.shim._reaper import Reaper

__all__ = ["Runc", "RuncError"]

#: The most of a command's stdout or stderr kept (``ps`` of a big container fits).
MAX_OUTPUT = 4 << 20
#: The fifo runc's init waits on, in the container's state directory.
EXEC_FIFO = "exec.fifo"


class RuncError(Exception):
    """A runc command failed; the message is runc's own reason."""


async def _collect(fd: int) -> bytes:
    """Read ``fd`` (non-blocking) to EOF without blocking the loop; closes it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []
    size = 0
    os.set_blocking(fd, False)

    def readable() -> None:
        nonlocal size
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)
            return
        if size < MAX_OUTPUT:
            chunks.append(data)
            size += len(data)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


async def _read_exec_fifo(fd: int, exited: asyncio.Event) -> bytes:
    """What the init writes to its exec fifo, read to its end (the init
    closes it as it execs the container's process); ``b""`` when the init
    exited without writing.  Linux reports no hang-up on a fifo whose
    writer has not come yet, so this waits for the init to open it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        while not done.done():
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                return
            if not chunk or len(data) > 4096:
                done.set_result(None)
                return
            data.extend(chunk)

    def dead(_: object) -> None:
        # The init is gone: whatever it wrote is there, or nothing is.  (A
        # callback that comes after the fd was closed finds ``done`` done.)
        readable()
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    waiter = asyncio.ensure_future(exited.wait())
    waiter.add_done_callback(dead)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        waiter.remove_done_callback(dead)
        waiter.cancel()
        if not done.done():
            done.cancel()
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Runc:
    reaper: Reaper
    binary: str
    root: str
    log: str
    systemd_cgroup: bool = False
    criu: str = ""

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [self.binary, "--root", self.root, "--log", self.log, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        if self.criu:
            argv += ["--criu", self.criu]
        return [*argv, *args]

    def last_error(self) -> str:
        """The message of the last ``error`` runc logged to ``log.json``."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 65536))
                lines = f.read().splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg", ""))
        return ""

    async def run(
        self,
        args: Sequence[str],
        *,
        stdio: tuple[int, int, int] | None = None,
        input: bytes = b"",
        what: str = "",
    ) -> bytes:
        """Run ``runc args``; its stdout.  ``stdio`` replaces the command's own
        (it is the container's for create and exec); else stdin is ``input``
        and stdout and stderr are read."""
        if stdio is not None:
            _pid, exited = self.reaper.spawn(self._argv(args), stdio)
            status, out, err = await exited, b"", b""
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                _pid, exited = self.reaper.spawn(self._argv(args), (in_r, out_w, err_w))
            except BaseException:
                for fd in (in_w, out_r, err_r):
                    os.close(fd)
                raise
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            readers = (
                asyncio.ensure_future(_collect(out_r)),
                asyncio.ensure_future(_collect(err_r)),
            )
            try:
                if len(input) <= 65536:
                    # An empty pipe takes 64 KiB without blocking.
                    os.write(in_w, input)
                else:
                    await asyncio.get_running_loop().run_in_executor(None, os.write, in_w, input)
            except OSError:
                pass  # it exited without reading: its status says why
            finally:
                os.close(in_w)
            status = await exited
            out, err = await readers[0], await readers[1]
        if status != 0:
            reason = self.last_error() or err.decode(errors="replace").strip()
            prefix = f"{what}: " if what else ""
            raise RuncError(f"{prefix}{reason or f'{self.binary} exited with status {status}'}")
        return out

    async def create(
        self,
        container_id: str,
        bundle: str,
        pid_file: str,
        stdio: tuple[int, int, int],
        *,
        console_socket: str = "",
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None:
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        await self.run([*args, container_id], stdio=stdio, what="OCI runtime create failed")

    async def start(self, container_id: str, *, exited: asyncio.Event | None = None) -> None:
        """Let the created container's process run.

        For runc itself this is what ``runc start`` does, without a runc
        process (about 5 ms of every ``ctr run``): the container's init waits
        to open the ``exec.fifo`` in runc's state directory for writing; read
        its byte, then remove the fifo (runc lists a container whose fifo is
        gone as running).  ``exited`` is set when the init exits: an init that
        died before writing its byte is an error, as runc's own check every
        100 ms finds it.  Other runtimes (crun runs poststart hooks in its
        ``start``), and a container with no fifo, get the runtime's ``start``.
        """
        fifo = os.path.join(self.root, container_id, EXEC_FIFO)
        fd = -1
        if exited is not None and os.path.basename(self.binary) == "runc":
            try:
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                fd = -1
        if fd < 0:
            await self.run(["start", container_id], what="OCI runtime start failed")
            return
        assert exited is not None
        try:
            data = await _read_exec_fifo(fd, exited)
        finally:
            os.close(fd)
        if not data:
            reason = "container process is already dead" if exited.is_set() else ""
            raise RuncError(
                "OCI runtime start failed: "
                + (reason or "cannot start an already running container")
            )
        os.unlink(fifo)

    async def exec(
        self,
        container_id: str,
        process_file: str,
        pid_file: str,
        stdio: tuple[int, int, int],
        *,
        console_socket: str = "",
    ) -> None:
        args = ["exec", "--detach", "--pid-file", pid_file, "--process", process_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        await self.run([*args, container_id], stdio=stdio, what="OCI runtime exec failed")

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        args = ["delete", *(["--force"] if force else []), container_id]
        await self.run(args, what="failed to delete task")

    async def kill(self, container_id: str, signal: int, *, all: bool = False) -> None:
        args = ["kill", *(["--all"] if all else []), container_id, str(signal)]
        await self.run(args, what="failed to kill task")

    async def pause(self, container_id: str) -> None:
        await self.run(["pause", container_id], what="failed to pause task")

    async def resume(self, container_id: str) -> None:
        await self.run(["resume", container_id], what="failed to resume task")

    async def ps(self, container_id: str) -> list[int]:
        out = await self.run(["ps", "--format", "json", container_id], what="failed to list pids")
        pids = json.loads(out or b"[]")
        return [int(p) for p in pids or []]

    async def update(self, container_id: str, resources: bytes) -> None:
        args = ["update", "--resources", "-", container_id]
        await self.run(args, input=resources, what="failed to update task")

    async def checkpoint(
        self, container_id: str, image_path: str, work_path: str, *, leave_running: bool
    ) -> None:
        args = ["checkpoint", "--image-path", image_path, "--work-path", work_path]
        if leave_running:
            args.append("--leave-running")
        await self.run([*args, container_id], what="checkpoint failed")
