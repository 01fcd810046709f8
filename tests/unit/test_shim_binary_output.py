"""What a shim's ``start`` and ``delete`` print costs the daemon a bounded
amount of memory, however much a (fake, misbehaving) shim prints."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs
from pycontainerd.api.runtime.v2.task import shim_pb2
from pycontainerd.runtime.binary import MAX_OUTPUT, _run, delete_shim, start_shim
from pycontainerd.runtime.bundle import Bundle, new_bundle

FLOOD = 200 << 20


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "containerd-shim-flood-v1"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def _bundle(tmp_path: Path) -> Bundle:
    return new_bundle(tmp_path / "root", tmp_path / "state", "prod", "web", b"{}")


def _peak_rss_reset() -> None:
    # "5" resets the peak RSS the kernel reports as VmHWM (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_a_flood_on_both_streams_keeps_only_the_cap_and_costs_no_memory(tmp_path: Path) -> None:
    shim = _script(
        tmp_path,
        f"""\
        head -c {FLOOD} /dev/zero | tr '\\0' x >&2 &
        head -c {FLOOD} /dev/zero | tr '\\0' y
        wait
        exit 3
        """,
    )
    _peak_rss_reset()
    before = _status_kib("VmRSS")
    result = asyncio.run(_run([shim, "start"], None, {"PATH": "/usr/bin:/bin"}, None, 60))
    growth_kib = _status_kib("VmHWM") - before
    assert result.code == 3
    assert result.out == b"y" * MAX_OUTPUT and result.out_cut
    assert result.err == b"x" * MAX_OUTPUT and result.err_cut
    # communicate() held all 400 MiB (and joined copies of it); reading in
    # chunks keeps the daemon's peak growth to a few of them.
    assert growth_kib < 16 << 10, f"peak RSS grew {growth_kib} KiB"


def test_a_start_that_floods_stdout_fails_clearly(tmp_path: Path) -> None:
    shim = _script(tmp_path, f"head -c {FLOOD} /dev/zero\n")
    bundle = _bundle(tmp_path)
    with pytest.raises(errdefs.Unknown, match=f"printed more than {MAX_OUTPUT} bytes where an add"):
        asyncio.run(
            start_shim(
                shim,
                bundle,
                grpc_address="/g.sock",
                ttrpc_address="/g.sock.ttrpc",
                publish_binary="/bin/true",
                options=None,
                timeout=60,
            )
        )


def test_a_failing_start_reports_its_output_cut(tmp_path: Path) -> None:
    shim = _script(tmp_path, f"echo boom; head -c {FLOOD} /dev/zero >&2; exit 1\n")
    bundle = _bundle(tmp_path)
    with pytest.raises(errdefs.Unknown) as caught:
        asyncio.run(
            start_shim(
                shim,
                bundle,
                grpc_address="/g.sock",
                ttrpc_address="/g.sock.ttrpc",
                publish_binary="/bin/true",
                options=None,
                timeout=60,
            )
        )
    message = caught.value.message
    assert message.startswith("failed to start shim: boom")
    assert f"[output cut at {MAX_OUTPUT} bytes per stream]: exit status 1" in message
    assert len(message) < 3 * MAX_OUTPUT


def test_a_good_start_with_a_chatty_stderr_still_answers(tmp_path: Path) -> None:
    shim = _script(tmp_path, f"head -c {FLOOD} /dev/zero >&2; echo unix:///run/s.sock\n")
    bundle = _bundle(tmp_path)
    address = asyncio.run(
        start_shim(
            shim,
            bundle,
            grpc_address="/g.sock",
            ttrpc_address="/g.sock.ttrpc",
            publish_binary="/bin/true",
            options=None,
            timeout=60,
        )
    )
    assert address == "/run/s.sock"


def test_start_reads_its_options_from_stdin_while_output_is_read(tmp_path: Path) -> None:
    # Options bigger than a pipe's buffer, echoed back as they are read: a
    # runner that wrote stdin before reading stdout would deadlock here.
    options = any_pb2.Any(type_url="x/y", value=b"o" * (1 << 20))
    shim = _script(tmp_path, "cat >&2; echo unix:///run/s.sock\n")
    address = asyncio.run(
        start_shim(
            shim,
            _bundle(tmp_path),
            grpc_address="/g.sock",
            ttrpc_address="/g.sock.ttrpc",
            publish_binary="/bin/true",
            options=options,
            timeout=60,
        )
    )
    assert address == "/run/s.sock"


def test_a_delete_that_floods_stdout_fails_clearly(tmp_path: Path) -> None:
    shim = _script(tmp_path, f"head -c {FLOOD} /dev/zero\n")
    with pytest.raises(errdefs.Unknown, match=f"printed more than {MAX_OUTPUT} bytes where a De"):
        asyncio.run(
            delete_shim(
                shim,
                _bundle(tmp_path),
                grpc_address="/g.sock",
                ttrpc_address="/g.sock.ttrpc",
                publish_binary="/bin/true",
                timeout=60,
            )
        )


def test_a_delete_answers_with_a_chatty_stderr(tmp_path: Path) -> None:
    answer = tmp_path / "answer"
    answer.write_bytes(shim_pb2.DeleteResponse(pid=42, exit_status=137).SerializeToString())
    shim = _script(tmp_path, f"head -c {FLOOD} /dev/zero >&2; cat {answer}\n")
    bundle = _bundle(tmp_path)
    exit_ = asyncio.run(
        delete_shim(
            shim,
            bundle,
            grpc_address="/g.sock",
            ttrpc_address="/g.sock.ttrpc",
            publish_binary="/bin/true",
            timeout=60,
        )
    )
    assert (exit_.pid, exit_.status) == (42, 137)
    assert not bundle.path.exists()


def test_a_shim_that_never_stops_printing_is_killed_at_the_timeout(tmp_path: Path) -> None:
    shim = _script(tmp_path, "exec cat /dev/zero\n")
    with pytest.raises(errdefs.DeadlineExceeded, match=r"no answer in 0\.5s"):
        asyncio.run(_run([shim, "start"], None, {}, None, 0.5))
