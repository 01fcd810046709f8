"""Start-up: what the daemon creates, and how it refuses to start.

Every refusal is a non-zero exit with one line on stderr naming the culprit,
and never harms a daemon that is already serving.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycontainerd.client import Client
from tests.support import daemons, launch
from tests.support.daemons import RunningDaemon

pytestmark = pytest.mark.integration


@pytest.fixture
def layout() -> Iterator[launch.Layout]:
    with daemons.temp_base("pcd-start-") as base:
        yield launch.Layout(base)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    return lines[0]


# --- what a running daemon looks like -----------------------------------------------


def test_socket_is_0660_and_root_and_state_are_0711(daemon: RunningDaemon) -> None:
    assert stat.S_ISSOCK(os.stat(daemon.address).st_mode)
    assert mode(daemon.address) == 0o660
    assert mode(daemon.root) == 0o711
    assert mode(daemon.state) == 0o711


def test_existing_root_and_state_are_tightened_to_0711(layout: launch.Layout) -> None:
    layout.root.mkdir(mode=0o777)
    layout.state.mkdir(mode=0o777)
    os.chmod(layout.root, 0o777)
    os.chmod(layout.state, 0o755)
    with launch.running(layout):
        assert mode(layout.root) == 0o711
        assert mode(layout.state) == 0o711


def test_socket_is_0660_whatever_the_umask(layout: launch.Layout) -> None:
    old = os.umask(0)
    try:
        with launch.running(layout) as d:
            assert mode(d.address) == 0o660
    finally:
        os.umask(old)


# --- bad config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("version = 2\n[grpc\naddress = 1\n", "invalid TOML", id="malformed"),
        pytest.param("version = \n", "invalid TOML", id="no-value"),
        pytest.param("version = 2\nbogus = true\n", "bogus: unknown setting", id="unknown-key"),
        pytest.param(
            "version = 2\n[grpc]\n  uid = 'root'\n", "grpc.uid: expected an integer", id="type"
        ),
        pytest.param("version = 3\n", "unsupported config version 3", id="version"),
        pytest.param(
            "version = 2\n[proxy_plugins.x]\n  type = 'snapshot'\n",
            "proxy_plugins.x: type and address are required",
            id="proxy",
        ),
    ],
)
def test_bad_config_exits_non_zero_with_one_stderr_line_naming_file_and_problem(
    layout: launch.Layout, text: str, problem: str
) -> None:
    layout.config.write_text(text)
    result = launch.exit_of(layout)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert str(layout.config) in line
    assert problem in line
    assert result.stdout == ""
    assert not layout.address.exists()


def test_unknown_log_level_exits_non_zero_with_one_line(layout: launch.Layout) -> None:
    layout.config.write_text('version = 2\n[debug]\n  level = "chatty"\n')
    result = launch.exit_of(layout, log_level=None)
    assert result.returncode != 0
    assert "chatty" in one_line(result.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_address_in_use_fails_start_up_in_one_line(layout: launch.Layout) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        layout.config.write_text(f'version = 2\n[metrics]\n  address = "{address}"\n')
        result = launch.exit_of(layout)
    assert result.returncode != 0
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"pycontainerd: metrics address {address}: ")
    assert "address already in use" in last
    assert "Traceback" not in result.stderr
    assert not layout.address.exists()  # the gRPC socket it had bound is gone again


def test_malformed_metrics_address_fails_start_up_in_one_line(layout: launch.Layout) -> None:
    layout.config.write_text('version = 2\n[metrics]\n  address = "localhost"\n')
    result = launch.exit_of(layout)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "pycontainerd: metrics address localhost: want host:port, e.g. 127.0.0.1:1338"
    )
    assert "Traceback" not in result.stderr


def test_root_that_cannot_be_created_fails_start_up_in_one_line(layout: launch.Layout) -> None:
    (layout.base / "file").write_text("")
    result = launch.exit_of(layout, root=layout.base / "file" / "root")
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert line.startswith(f"pycontainerd: {layout.base / 'file' / 'root'}: cannot create")


# --- the socket address ------------------------------------------------------------------


def test_second_daemon_on_a_socket_in_use_fails_and_the_first_keeps_serving(
    layout: launch.Layout,
) -> None:
    with launch.running(layout) as first:
        with Client(first.address) as client:
            uuid = client.server().uuid
        # Another root, the same socket.
        result = launch.exit_of(layout, root=layout.base / "other-root")
        assert result.returncode != 0
        line = one_line(result.stderr)
        assert str(layout.address) in line
        assert "in use" in line

        assert first.process.poll() is None
        assert stat.S_ISSOCK(os.stat(first.address).st_mode)
        launch.assert_serving(first.address)
        with Client(first.address) as client:
            assert client.server().uuid == uuid


def test_second_daemon_on_the_same_root_fails_and_the_first_keeps_serving(
    layout: launch.Layout,
) -> None:
    with launch.running(layout) as first:
        # The very same command line again: root and socket both taken.
        result = launch.exit_of(layout)
        assert result.returncode != 0
        assert "in use" in one_line(result.stderr)
        # Its failed start must not have removed the first daemon's socket.
        assert stat.S_ISSOCK(os.stat(first.address).st_mode)
        launch.assert_serving(first.address)


def test_stale_socket_file_with_no_listener_is_replaced(layout: launch.Layout) -> None:
    # A socket file left behind by a daemon that died: bound, never unlinked.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(layout.address))
    dead.close()
    assert stat.S_ISSOCK(os.stat(layout.address).st_mode)
    before = os.stat(layout.address).st_ino

    with launch.running(layout) as d:
        launch.assert_serving(d.address)
        assert os.stat(d.address).st_ino != before
        assert mode(d.address) == 0o660


def test_non_socket_file_at_the_address_is_refused_and_left_alone(
    layout: launch.Layout,
) -> None:
    layout.address.write_text("precious data\n")
    result = launch.exit_of(layout)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert str(layout.address) in line
    assert "not a socket" in line
    assert layout.address.read_text() == "precious data\n"


def test_directory_at_the_address_is_refused(layout: launch.Layout) -> None:
    layout.address.mkdir()
    result = launch.exit_of(layout)
    assert result.returncode != 0
    assert "not a socket" in one_line(result.stderr)
    assert layout.address.is_dir()


def test_socket_path_too_long_for_a_unix_socket_is_refused(layout: launch.Layout) -> None:
    long_address = layout.base / ("x" * 120) / "p.sock"
    result = launch.exit_of(layout, address=long_address)
    assert result.returncode != 0
    assert "longer than 107 bytes" in one_line(result.stderr)


def test_missing_parent_directories_of_the_socket_are_created(layout: launch.Layout) -> None:
    address = layout.base / "run" / "deep" / "p.sock"
    with launch.running(layout, address=address) as d:
        launch.assert_serving(d.address)
        assert mode(address) == 0o660


def test_daemon_lifts_its_soft_open_file_limit_to_the_hard_one() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        with daemons.pycontainerd() as d:
            limits = Path(f"/proc/{d.process.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert line.split()[3:5] == [want, want]
