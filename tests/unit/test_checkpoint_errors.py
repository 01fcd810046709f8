"""Checkpoint's small parts: the options Go clients send are understood, and
the reasons in CRIU's log reach the caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs, ttrpc
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.services.tasks import _checkpoint_path
from pycontainerd.shim._service import (
    CRIU_LOG_ERRORS,
    CRIU_LOG_TAIL,
    checkpoint_args,
    criu_errors,
)

DUMP_LOG = """\
(00.010657) vdso: Parsing at 7f0f1fdb3000 7f0f1fdb5000
(00.009000) Error (criu/util.c:642): exited, status=1
(00.011076) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
(00.011082) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
(00.011082) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
(00.011087) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed
(00.011112) Adjust mmap_min_addr 0x1000 -> 0x10000
"""


@pytest.mark.parametrize(
    "url",
    [
        "containerd.runc.v1.CheckpointOptions",
        "type.googleapis.com/containerd.runc.v1.CheckpointOptions",
    ],
)
def test_checkpoint_options_are_read_with_a_bare_type_url_as_go_sends_them(url: str) -> None:
    options = any_pb2.Any(
        type_url=url, value=oci_pb2.CheckpointOptions(image_path="/ckpt").SerializeToString()
    )
    assert _checkpoint_path("io.containerd.runc.v2", options) == "/ckpt"
    assert _checkpoint_path("io.containerd.other.v1", options) == ""


def test_other_checkpoint_options_for_runc_are_refused() -> None:
    options = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"")
    with pytest.raises(errdefs.InvalidArgument, match="invalid task checkpoint option"):
        _checkpoint_path("io.containerd.runc.v2", options)
    unknown = any_pb2.Any(type_url="example.com/Nope", value=b"")
    with pytest.raises(errdefs.InvalidArgument, match=r"for io\.containerd\.runc\.v2"):
        _checkpoint_path("io.containerd.runc.v2", unknown)


def test_criu_errors_are_the_logs_reasons_once_each(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text(DUMP_LOG)
    assert criu_errors(str(log)) == [
        "vdso: Unexpected rt vDSO area bounds (criu/vdso.c:381)",
        "vdso: Failed to fill self vdso symtable (criu/vdso.c:613)",
        "kerndat_vdso_fill_symtable failed (criu/kerndat.c:1615)",
    ]


def test_criu_errors_read_a_bounded_tail_and_keep_a_few(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    with log.open("w") as f:
        f.write("(0.1) Error (a.c:1): lost in the head\n")
        f.write("x" * CRIU_LOG_TAIL + "\n")
        for n in range(50):
            f.write(f"(0.2) Error (b.c:{n}): reason {n} {'y' * 2000}\n")
    errors = criu_errors(str(log))
    assert len(errors) == CRIU_LOG_ERRORS
    assert not any("lost in the head" in e for e in errors)
    assert all(len(e) <= 512 for e in errors)


def test_criu_errors_of_no_log_a_fifo_or_a_symlink_are_none(tmp_path: Path) -> None:
    assert criu_errors(str(tmp_path / "missing.log")) == []
    os.mkfifo(tmp_path / "fifo.log")
    assert criu_errors(str(tmp_path / "fifo.log")) == []
    (tmp_path / "real.log").write_text(DUMP_LOG)
    (tmp_path / "link.log").symlink_to(tmp_path / "real.log")
    assert criu_errors(str(tmp_path / "link.log")) == []


def test_checkpoint_options_become_runcs_flags() -> None:
    everything = oci_pb2.CheckpointOptions(
        exit=True,
        open_tcp=True,
        external_unix_sockets=True,
        terminal=True,
        file_locks=True,
        empty_namespaces=["network"],
        cgroups_mode="soft",
    )
    assert checkpoint_args("web", "/img", "/work", everything) == [
        "checkpoint", "--image-path", "/img", "--work-path", "/work",
        "--tcp-established", "--ext-unix-sk", "--shell-job", "--file-locks",
        "--manage-cgroups-mode", "soft", "--empty-ns", "network", "web",
    ]  # fmt: skip
    assert checkpoint_args("web", "/img", "/work", oci_pb2.CheckpointOptions()) == [
        "checkpoint", "--image-path", "/img", "--work-path", "/work", "--leave-running", "web",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        oci_pb2.CheckpointOptions(cgroups_mode="--criu=/tmp/evil"),
        oci_pb2.CheckpointOptions(empty_namespaces=["--leave-running"]),
    ],
)
def test_checkpoint_options_that_are_not_values_are_refused(
    options: oci_pb2.CheckpointOptions,
) -> None:
    with pytest.raises(ttrpc.StatusError) as caught:
        checkpoint_args("web", "/img", "/work", options)
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT
