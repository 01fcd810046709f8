"""Create a layer's small regular files on worker threads.

Creating an inode is most of an unpack's cost, and it is kernel time: the
syscalls release the GIL, so while workers open, write, time and close files
the applier's thread parses the next headers.  Each batch holds files of
one directory, and a directory's batches go to the worker already busy with
it: creating a file holds its directory's lock for the whole inode
allocation, so two workers in one directory would only wait (spinning, on a
kernel whose allocator is slow) for each other.  Workers only ever create a
new file (``O_EXCL``) relative to a directory fd the applier resolved inside
the root; anything else (replacing an entry, links, whiteouts, removals)
stays on the applier's thread, which first waits for the workers
(:meth:`FileWriter.barrier`) whenever what it is about to do could touch a
file still in flight.  Directory fds a job names stay open until the
barrier, because the applier releases stale fds only after one.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pycontainerd.archive import tar

__all__ = ["FileJob", "FileWriter", "JobError", "write_file"]

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_BATCH_BYTES = 1 << 20
_BATCH_FILES = 64
_QUEUE_BATCHES = 8


@dataclass(slots=True)
class FileJob:
    """One regular file to create: ``data`` under ``base`` in directory ``pfd``.

    ``chown``/``chmod`` say whether the owner and mode still need setting
    after ``open_mode`` was given to open().
    """

    hdr: tar.Header
    pfd: int
    base: str
    data: bytes
    open_mode: int
    chown: bool
    chmod: bool
    times: tuple[int, int]
    seq: int = 0


def write_file(job: FileJob) -> None:
    """Create the file, write it in as few writes as the kernel allows, finish it."""
    fd = os.open(job.base, _FILE_FLAGS, job.open_mode, dir_fd=job.pfd)
    try:
        view = memoryview(job.data)
        while view:
            view = view[os.write(fd, view) :]
        if job.chown:
            os.fchown(fd, job.hdr.uid, job.hdr.gid)
        if job.chmod:
            os.fchmod(fd, job.hdr.mode & 0o7777)
        os.utime(fd, ns=job.times)
    finally:
        os.close(fd)


class FileWriter:
    """A few threads creating files from batches of :class:`FileJob`.

    Jobs that find their name taken (``FileExistsError``) are handed back at
    the next :meth:`barrier` for the applier to replace in order; any other
    failure is raised there, with its job.
    """

    def __init__(self, workers: int) -> None:
        self._queues: list[queue.Queue[list[FileJob] | None]] = [
            queue.Queue(_QUEUE_BATCHES) for _ in range(workers)
        ]
        self._batch: list[FileJob] = []
        self._batch_bytes = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._load = [0] * workers  # batches queued or running, per worker
        self._owner: dict[int, int] = {}  # directory fd -> the worker it last went to
        self._taken: list[FileJob] = []
        self._failed: tuple[FileJob, Exception] | None = None
        self._stop = False
        #: Resolved paths of files submitted since the last barrier.
        self.pending: set[str] = set()
        self._seq = 0
        self._threads = [
            threading.Thread(
                target=self._run, args=(i,), name=f"pycontainerd-apply-{i}", daemon=True
            )
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, key: str, job: FileJob) -> None:
        if self._batch and self._batch[0].pfd != job.pfd:
            self._flush()
        self.pending.add(key)
        self._seq += 1
        job.seq = self._seq
        self._batch.append(job)
        self._batch_bytes += len(job.data)
        if self._batch_bytes >= _BATCH_BYTES or len(self._batch) >= _BATCH_FILES:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        pfd = batch[0].pfd
        with self._lock:
            worker = self._owner.get(pfd)
            if worker is None or not self._load[worker]:
                # Not in anyone's hands: to the least busy worker.
                worker = min(range(len(self._load)), key=self._load.__getitem__)
                self._owner[pfd] = worker
            self._load[worker] += 1
        self._queues[worker].put(batch)

    def barrier(self, redo: Callable[[FileJob], None]) -> None:
        """Wait until every submitted file is written; ``redo`` the ones whose
        name was taken, in submission order; raise the first other failure."""
        if not self.pending:
            return
        self._flush()
        with self._idle:
            while any(self._load):
                self._idle.wait()
            taken, self._taken = self._taken, []
            failed, self._failed = self._failed, None
        self.pending.clear()
        self._owner.clear()  # directory fds may be closed and their numbers reused
        if failed is not None:
            job, exc = failed
            raise JobError(job, exc)
        # Workers finish batches out of order; the tar order decides who wins.
        for job in sorted(taken, key=lambda j: j.seq):
            redo(job)

    def close(self) -> None:
        """Stop the workers; jobs not started are dropped.  Always call it."""
        self._batch = []
        self._stop = True
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()

    def _run(self, worker: int) -> None:
        queue_ = self._queues[worker]
        while (batch := queue_.get()) is not None:
            taken: list[FileJob] = []
            failed: tuple[FileJob, Exception] | None = None
            try:
                for job in batch:
                    if self._stop:
                        break
                    try:
                        write_file(job)
                    except FileExistsError:
                        taken.append(job)
                    except Exception as exc:  # raised on the applier's thread
                        failed = (job, exc)
                        break
            finally:
                # Always accounted for, or a barrier would wait forever.
                with self._idle:
                    self._taken.extend(taken)
                    if failed is not None and self._failed is None:
                        self._failed = failed
                    self._load[worker] -= 1
                    self._idle.notify_all()


class JobError(Exception):
    """A worker's failure, with the job it failed on (unwrapped by the applier)."""

    def __init__(self, job: FileJob, exc: Exception) -> None:
        super().__init__(str(exc))
        self.job = job
        self.exc = exc
