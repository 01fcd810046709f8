"""Client-side task IO: FIFO names and directories, copying through real FIFOs
with this test playing the shim, cancel and close, and log URIs."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import pytest

from pycontainerd import cio, errdefs
from pycontainerd.cio.uri import LogURI, log_uri, parse_log_uri
from pycontainerd.cli import _cgroups

pytestmark = pytest.mark.unit


def test_fifo_set_uses_containerds_names_in_a_private_directory(tmp_path: Path) -> None:
    fifos = cio.new_fifo_set_in_dir(tmp_path / "fifo", "web", terminal=False)
    directory = Path(fifos.config.stdin).parent
    assert directory.parent == tmp_path / "fifo"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    cfg = fifos.config
    names = [Path(p).name for p in (cfg.stdin, cfg.stdout, cfg.stderr)]
    assert names == ["web-stdin", "web-stdout", "web-stderr"]
    fifos.close()
    assert not directory.exists()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_fifo_set_refuses_an_id_that_is_no_file_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        cio.new_fifo_set_in_dir(tmp_path, bad, terminal=False)


def _shim_writes(path: str, data: bytes) -> None:
    """What a shim does with an output FIFO: open it for writing, write, close."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_output_is_copied_until_the_shim_closes_its_end(tmp_path: Path) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    process_io = cio.new_creator(stdout=out, stderr=err, fifo_dir=tmp_path)("p1")
    cfg = process_io.config
    assert stat.S_ISFIFO(os.stat(cfg.stdout).st_mode)
    assert cfg.stdin == "" and not cfg.terminal
    writers = [
        threading.Thread(target=_shim_writes, args=(cfg.stdout, b"out\n")),
        threading.Thread(target=_shim_writes, args=(cfg.stderr, b"err\n")),
    ]
    for w in writers:
        w.start()
    assert process_io.wait(timeout=10)
    for w in writers:
        w.join()
    assert (out.getvalue(), err.getvalue()) == (b"out\n", b"err\n")
    process_io.close()
    assert not Path(cfg.stdout).parent.exists()


def test_stdin_is_copied_and_its_end_reported(tmp_path: Path) -> None:
    ended = threading.Event()
    process_io = cio.new_creator(
        stdin=io.BytesIO(b"typed\n"), fifo_dir=tmp_path, on_stdin_eof=ended.set
    )("p1")
    fd = os.open(process_io.config.stdin, os.O_RDONLY)  # the shim's end
    try:
        received = b""
        while chunk := os.read(fd, 100):
            received += chunk
    finally:
        os.close(fd)
    assert received == b"typed\n"
    assert ended.wait(10)
    process_io.close()


def test_one_output_stream_alone_gets_its_partner_discarded(tmp_path: Path) -> None:
    # containerd's runc shims want both output FIFOs or neither.
    cfg = cio.new_creator(stdout=io.BytesIO(), fifo_dir=tmp_path)("p1").config
    assert cfg.stdout and cfg.stderr


def test_terminal_mode_has_no_stderr_fifo(tmp_path: Path) -> None:
    process_io = cio.new_creator(
        stdin=io.BytesIO(), stdout=io.BytesIO(), terminal=True, fifo_dir=tmp_path
    )("p1")
    assert process_io.config.terminal and process_io.config.stderr == ""
    process_io.cancel()
    process_io.close()


def test_cancel_ends_copies_whose_fifo_the_shim_never_opened(tmp_path: Path) -> None:
    process_io = cio.new_creator(
        stdin=io.BytesIO(b"x"), stdout=io.BytesIO(), stderr=io.BytesIO(), fifo_dir=tmp_path
    )("p1")
    assert not process_io.wait(timeout=0.1)  # blocked in open: nobody is there
    process_io.cancel()
    assert process_io.wait(timeout=5)
    process_io.close()
    process_io.close()  # twice is fine


def test_stdin_closer_closes_when_bound_after_the_end() -> None:
    closed: list[bool] = []

    class Process:
        id = "p"

        def close_io(self, *, stdin: bool) -> None:
            closed.append(stdin)

    closer = cio.StdinCloser()
    closer()  # the stream ended before the process existed
    assert closed == []
    closer.bind(Process())
    assert closed == [True]


def test_null_io_and_log_uris_have_no_fifos(tmp_path: Path) -> None:
    assert cio.null_io("p").config == cio.Config()
    log = tmp_path / "out.log"
    cfg = cio.log_file(log)("p").config
    assert cfg.stdout == cfg.stderr == f"file://{log}"
    cfg = cio.binary_io("/usr/bin/logger", {"tag": "web app", "a": "1"})("p").config
    assert cfg.stdout == "binary:///usr/bin/logger?a=1&tag=web+app"


def test_log_uri_is_built_as_go_builds_it() -> None:
    assert log_uri("file", "/var/log/a b.log") == "file:///var/log/a%20b.log"
    with pytest.raises(errdefs.InvalidArgument, match="must be absolute"):
        log_uri("file", "relative.log")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:///tmp/x.log", LogURI("file", "/tmp/x.log")),
        ("binary:///bin/log?id=1&id=2&k=v", LogURI("binary", "/bin/log", {"id": "1", "k": "v"})),
        ("/tmp/fifo", LogURI("fifo", "/tmp/fifo")),
    ],
)
def test_log_uri_parses(text: str, expected: LogURI) -> None:
    assert parse_log_uri(text) == expected


@pytest.mark.parametrize("bad", ["http:///x", "file://relative/x", "file:relative", "rel/path"])
def test_log_uri_refuses_what_the_shim_would_misread(bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        cio.log_uri(bad)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def test_cgroup_v1_metrics_decode_as_ctr_prints_them() -> None:
    usage = _field(1, 1 << 62) + _field(2, 4096)
    memory = _field(18, 7) + _field(33, usage) + _field(34, b"")
    per_cpu = _varint(5) + _varint(300)
    cpu = _field(1, _field(1, 305) + _field(4, per_cpu)) + _field(2, b"")
    data = _field(2, _field(1, 1)) + _field(3, cpu) + _field(4, memory) + _field(99, 1)
    decoded = _cgroups.decode(data)
    assert list(decoded) == ["pids", "cpu", "memory"]  # Go's field order
    assert decoded["cpu"] == {"usage": {"total": 305, "per_cpu": [5, 300]}, "throttling": {}}
    assert decoded["memory"] == {
        "total_cache": 7,
        "usage": {"limit": 1 << 62, "usage": 4096},
        "swap": {},
    }
    assert _cgroups.table_rows(decoded) == [
        ("memory.usage_in_bytes", "4096"),
        ("memory.limit_in_bytes", str(1 << 62)),
        ("memory.stat.cache", "7"),
        ("cpuacct.usage", "305"),
        ("cpuacct.usage_percpu", "[5 300]"),
        ("pids.current", "1"),
        ("pids.limit", "0"),
    ]


def test_cgroup_metrics_refuse_a_truncated_message() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        _cgroups.decode(b"\x08\xff")
