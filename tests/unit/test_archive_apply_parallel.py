"""apply_layer with small files created on worker threads, and without chown/chmod
where the kernel already gives the right owner and mode.

The tree must come out exactly as the one-thread apply makes it, whatever
the order of names in the layer: replacements, links and whiteouts of files
still in flight, directories made over files, stale directory handles.
"""

from __future__ import annotations

import errno
import io
import os
import random
import stat
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.archive import Whiteouts, _fs, _writer, apply_layer
from pycontainerd.archive import apply as apply_mod

pytestmark = pytest.mark.unit

UID, GID = os.getuid(), os.getgid()
ROOT = os.geteuid() == 0


def entry(
    name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, **attrs: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.uid, info.gid = UID, GID
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def layer(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def tree(root: Path, *, dir_times: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry's type, mode, owner, mtime, link count and content.

    Without ``dir_times``, directories the layer does not name are compared
    without their mtimes (each apply changes them at its own moment).
    """
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            data: object = None
            if stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(path)
            rel = str(path.relative_to(root))
            mtime = st.st_mtime_ns if dir_times or not stat.S_ISDIR(st.st_mode) else 0
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, mtime, st.st_nlink, data)
    return out


def apply_both(
    tmp_path: Path,
    data: bytes,
    monkeypatch: pytest.MonkeyPatch,
    *,
    before: dict[str, bytes] | None = None,
    whiteouts: Whiteouts = Whiteouts.REMOVE,
) -> tuple[dict[str, tuple[object, ...]], dict[str, tuple[object, ...]]]:
    """The tree made with workers and the tree made on one thread."""
    results = []
    for workers in (2, 0):
        root = tmp_path / f"w{workers}"
        root.mkdir()
        for name, content in (before or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
            os.utime(root / name, ns=(1, 1))
        with monkeypatch.context() as m:
            m.setattr(apply_mod, "_WORKERS", workers)
            apply_layer(root, io.BytesIO(data), whiteouts=whiteouts)
        results.append(tree(root, dir_times=before is None))
    return results[0], results[1]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def test_many_files_in_many_dirs_match_the_one_thread_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    entries = [entry(f"d{i}/", kind=tarfile.DIRTYPE, mode=0o750 + i % 3) for i in range(20)]
    for n in range(600):
        size = rng.choice((0, 1, 511, 512, 4096, 70_000))
        entries.append(entry(f"d{n % 20}/f{n}", rng.randbytes(size), mode=0o600 + n % 0o200))
    entries.append(entry("top", b"t"))
    parallel, serial = apply_both(tmp_path, layer(*entries), monkeypatch)
    assert parallel == serial
    assert len(parallel) == 20 + 600 + 1


def test_names_repeated_replaced_linked_and_whited_out_while_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = layer(
        entry("a/", kind=tarfile.DIRTYPE),
        entry("a/f", b"first"),
        entry("a/f", b"second"),  # the same name twice: the last wins
        entry("a/g", b"g"),
        entry("a/g", kind=tarfile.SYMTYPE, linkname="f"),  # a file becomes a symlink
        entry("a/h", b"h"),
        entry("a/h/", kind=tarfile.DIRTYPE),  # a file becomes a directory
        entry("a/h/inner", b"i"),
        entry("a/k", b"k"),
        entry("a/k-link", kind=tarfile.LNKTYPE, linkname="a/k"),  # link to a file in flight
        entry("a/gone", b"x"),
        entry("a/.wh.gone"),  # whiteout of a file in flight
        entry("b/", kind=tarfile.DIRTYPE),
        entry("b/old", b"o"),
        entry("b/.wh..wh..opq"),
        entry("b/new", b"n"),
    )
    parallel, serial = apply_both(tmp_path, data, monkeypatch)
    assert parallel == serial
    assert parallel["a/f"][-1] == b"second"
    assert parallel["a/g"][-1] == "f"
    assert parallel["a/h/inner"][-1] == b"i"
    assert parallel["a/k"][4] == 2
    assert "a/gone" not in parallel


def test_files_already_in_the_target_are_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {"etc/hosts": b"old", "etc/keep": b"keep", "bin/sh": b"old-sh"}
    data = layer(
        entry("etc/hosts", b"new"),
        entry("bin/sh", b"new-sh", mode=0o755),
        entry("etc/added", b"added"),
    )
    parallel, serial = apply_both(tmp_path, data, monkeypatch, before=before)
    assert parallel == serial
    assert parallel["etc/hosts"][-1] == b"new"
    assert parallel["etc/keep"][-1] == b"keep"


def test_stale_directory_handles_wait_for_files_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny handle cache evicts a directory fd after nearly every entry;
    # files queued against it must still land in the right directory.
    monkeypatch.setattr(_fs, "_cache_size", lambda: 2)
    entries = [entry(f"d{i}/", kind=tarfile.DIRTYPE) for i in range(30)]
    entries += [entry(f"d{i}/f{j}", bytes([i, j])) for j in range(5) for i in range(30)]
    parallel, serial = apply_both(tmp_path, layer(*entries), monkeypatch)
    assert parallel == serial
    assert len(parallel) == 30 + 150


def test_modes_the_umask_would_change_are_set(root: Path) -> None:
    old = os.umask(0o077)
    try:
        apply_layer(
            root,
            io.BytesIO(
                layer(
                    entry("open", b"1", mode=0o666),
                    entry("exec", b"2", mode=0o755),
                    entry("private", b"3", mode=0o600),
                )
            ),
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()}
    assert modes == {"open": 0o666, "exec": 0o755, "private": 0o600}


def _default_acl(user: int, group: int, other: int) -> bytes:
    """A system.posix_acl_default value: version 2, then (tag, perm, id) entries."""
    undefined = 0xFFFFFFFF
    entries = ((0x01, user), (0x04, group), (0x10, group), (0x20, other))
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, undefined) for tag, perm in entries
    )


def test_a_default_acl_does_not_shape_the_mode(root: Path) -> None:
    parent = root / "shared"
    parent.mkdir()
    try:
        os.setxattr(parent, "system.posix_acl_default", _default_acl(7, 5, 0))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this filesystem")
        raise
    apply_layer(root, io.BytesIO(layer(entry("shared/file", b"x", mode=0o644))))
    assert stat.S_IMODE((parent / "file").stat().st_mode) == 0o644


@pytest.mark.skipif(not ROOT, reason="chown to another group needs root")
def test_a_setgid_directory_does_not_give_its_group(root: Path) -> None:
    parent = root / "team"
    parent.mkdir()
    os.chown(parent, 0, 4321)
    os.chmod(parent, 0o2775)
    apply_layer(root, io.BytesIO(layer(entry("team/file", b"x", uid=0, gid=0))))
    st = (parent / "file").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_worker_failure_is_a_typed_error_naming_the_entry(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _writer.write_file

    def failing(job: _writer.FileJob) -> None:
        if job.base == "bad":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(job)

    monkeypatch.setattr(_writer, "write_file", failing)
    data = layer(*(entry(f"d/f{i}", b"x") for i in range(50)), entry("d/bad", b"y"))
    with pytest.raises(errdefs.ResourceExhausted, match="d/bad"):
        apply_layer(root, io.BytesIO(data))


def _threads() -> Iterator[str]:
    import threading

    return (t.name for t in threading.enumerate())


def test_workers_are_gone_after_an_apply_fails(root: Path) -> None:
    data = layer(entry("d/f", b"x"), entry("d/f/x", b"y"))  # a file used as a directory
    with pytest.raises(errdefs.InvalidArgument):
        apply_layer(root, io.BytesIO(data))
    assert not any(name.startswith("pycontainerd-apply") for name in _threads())


@pytest.mark.skipif(not ROOT, reason="chown to another group needs root")
def test_a_directory_made_setgid_later_does_not_change_files_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [entry("d/", kind=tarfile.DIRTYPE, uid=0, gid=0)]
    entries += [entry(f"d/f{i}", b"x", uid=0, gid=0) for i in range(200)]
    # The same directory again, now setgid and another group: files already
    # written keep the group they were given; later ones take the directory's.
    entries.append(entry("d/", kind=tarfile.DIRTYPE, uid=0, gid=4321, mode=0o2775))
    entries.append(entry("d/late", b"y", uid=0, gid=0))
    parallel, serial = apply_both(tmp_path, layer(*entries), monkeypatch)
    assert parallel == serial
    assert parallel["d/f0"][2] == 0
    assert parallel["d/f199"][2] == 0


def test_a_directorys_files_stay_with_one_worker_while_it_is_busy(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers creating files in one directory would only wait on its
    lock: while a worker has a directory's batches, the next go to it too,
    and another directory goes to the idle worker."""
    import threading
    import time

    seen: list[tuple[str, str]] = []
    real = _writer.write_file

    def slow_write(job: _writer.FileJob) -> None:
        time.sleep(0.002)  # keeps the worker busy while the next batches come
        seen.append((job.base[0], threading.current_thread().name))
        real(job)

    monkeypatch.setattr(_writer, "write_file", slow_write)
    entries = [entry("a/", kind=tarfile.DIRTYPE), entry("b/", kind=tarfile.DIRTYPE)]
    entries += [entry(f"a/a{i}", b"x") for i in range(200)]
    entries += [entry(f"b/b{i}", b"y") for i in range(200)]
    apply_layer(root, io.BytesIO(layer(*entries)))
    by_dir: dict[str, set[str]] = {}
    for directory, thread in seen:
        by_dir.setdefault(directory, set()).add(thread)
    assert len(by_dir["a"]) == 1 and len(by_dir["b"]) == 1, by_dir
    assert by_dir["a"] != by_dir["b"]
    assert len(os.listdir(root / "a")) == len(os.listdir(root / "b")) == 200
