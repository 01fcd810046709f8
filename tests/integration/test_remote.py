"""The embeddable daemon supervisor (``pycontainerd.remote``, issue 13 part 4)
on our real daemon, our shim and real runc, with busybox containers.

A :class:`Recorder` backend keeps every state change and drains every
stream it is handed; tests wait on it for what a program embedding the
daemon would see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.oci import spec as oci
from pycontainerd.remote import (
    Backoff,
    EventType,
    ProcessStreams,
    Remote,
    RemoteClient,
    StateInfo,
)
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import daemons, tasks

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE
#: Fast enough for tests: health every 0.1 s, restarts from 50 ms.
FAST = {"health_interval": 0.1, "backoff": Backoff(initial=0.05, maximum=1.0)}
RESTART_BACKOFF = Backoff(initial=0.05, maximum=0.2)


@dataclass
class Recorder:
    """A backend that records state changes and reads every output stream."""

    changes: list[tuple[str, StateInfo]] = field(default_factory=list)
    output: dict[str, bytearray] = field(default_factory=dict)
    stdins: dict[str, object] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def state_changed(self, container_id: str, info: StateInfo) -> None:
        with self.cond:
            self.changes.append((container_id, info))
            self.cond.notify_all()

    def attach_streams(self, process_id: str, streams: ProcessStreams) -> None:
        buf = self.output.setdefault(process_id, bytearray())
        if streams.stdin is not None:
            self.stdins[process_id] = streams.stdin
        for stream in (streams.stdout, streams.stderr):
            if stream is not None:
                threading.Thread(target=self._drain, args=(stream, buf), daemon=True).start()

    def _drain(self, stream: object, buf: bytearray) -> None:
        with stream:  # type: ignore[attr-defined]
            while data := stream.read(4096):  # type: ignore[attr-defined]
                with self.cond:
                    buf.extend(data)
                    self.cond.notify_all()

    def states(self, container_id: str) -> list[EventType]:
        with self.cond:
            return [i.state for c, i in self.changes if c == container_id]

    def infos(self, container_id: str, state: EventType) -> list[StateInfo]:
        with self.cond:
            return [i for c, i in self.changes if c == container_id and i.state == state]

    def wait(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"not seen in {timeout}s: {self.changes}")

    def wait_state(
        self, container_id: str, state: EventType, count: int = 1, timeout: float = 20
    ) -> StateInfo:
        self.wait(lambda: len(self.infos(container_id, state)) >= count, timeout)
        return self.infos(container_id, state)[count - 1]

    def wait_output(self, process_id: str, text: bytes, timeout: float = 20) -> None:
        self.wait(lambda: text in self.output.get(process_id, b""), timeout)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@contextlib.contextmanager
def running_remote(**kwargs: object) -> Iterator[tuple[Remote, Path, list[str]]]:
    """A Remote on a temp base; the namespaces a test adds to the list are
    reaped after it, with the daemon stopped."""
    namespaces: list[str] = []
    with daemons.temp_base("rmt-") as base:
        remote = Remote(base / "root", base / "state", debug=True, **{**FAST, **kwargs})  # type: ignore[arg-type]
        try:
            yield remote, base, namespaces
        finally:
            remote.cleanup()
            tasks.reap(remote.address, namespaces, base)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Remote, Path, list[str]]]:
    with running_remote() as it:
        yield it


def new_client(
    remote: Remote, namespaces: list[str], archive: Path, backend: Recorder | None = None
) -> tuple[RemoteClient, Recorder, str]:
    ns = tasks.namespace()
    namespaces.append(ns)
    recorder = backend or Recorder()
    client = remote.client(recorder, namespace=ns, backoff=RESTART_BACKOFF)
    with open(archive, "rb") as f:
        client.containerd.import_archive(f)
    return client, recorder, ns


@pytest.fixture
def client(
    shared: tuple[Remote, Path, list[str]], archive: Path
) -> Iterator[tuple[RemoteClient, Recorder, str]]:
    remote, _, namespaces = shared
    made = new_client(remote, namespaces, archive)
    try:
        yield made
    finally:
        made[0].close()


def spec(ns: str, cid: str, *args: str, terminal: bool = False) -> dict[str, object]:
    opts = [oci.with_default_path_env, oci.with_process_args(*args)]
    if terminal:
        opts.append(oci.with_tty)
    return oci.generate(ns, cid, *opts)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a reaped shim's child counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


def test_a_container_runs_and_its_output_and_exit_reach_the_backend(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    c.create("hello", spec(ns, "hello", "sh", "-c", "echo hello; exit 3"), image=IMAGE)
    pid = c.start("hello")
    start = rec.wait_state("hello", EventType.START_CONTAINER)
    exit_ = rec.wait_state("hello", EventType.EXIT)
    assert start.pid == pid == exit_.pid
    assert (exit_.exit_code, exit_.oom_killed, exit_.process_id) == (3, False, "init")
    assert exit_.exited_at is not None
    rec.wait_output("hello", b"hello\n")
    assert rec.states("hello") == [EventType.START_CONTAINER, EventType.EXIT]
    c.delete("hello")
    with pytest.raises(errdefs.NotFound):
        c.containerd.load_container("hello")


def test_a_killed_daemon_is_restarted_and_exits_across_it_are_still_reported(
    archive: Path,
) -> None:
    with running_remote(oom_score=300) as (remote, _, namespaces):
        c, rec, ns = new_client(remote, namespaces, archive)
        for cid in ("stays", "dies-meanwhile"):
            c.create(cid, spec(ns, cid, "sleep", "300"), image=IMAGE)
        stays, dies = c.start("stays"), c.start("dies-meanwhile")
        first = remote.pid
        assert first is not None
        assert Path(f"/proc/{first}/oom_score_adj").read_text().strip() == "300"

        os.kill(first, signal.SIGKILL)
        os.kill(dies, signal.SIGKILL)  # exits while no daemon listens
        killed = time.monotonic()
        exit_ = rec.wait_state("dies-meanwhile", EventType.EXIT, timeout=30)
        assert time.monotonic() - killed < 15
        assert (exit_.pid, exit_.exit_code) == (dies, 137)
        # The new daemon may report the exit before the Remote counts its restart.
        tasks.wait_for(lambda: remote.restarts == 1)
        second = remote.pid
        assert second is not None and second != first
        assert Path(f"/proc/{second}/oom_score_adj").read_text().strip() == "300"

        # The live one is still followed: its exit comes from the new daemon's events.
        assert alive(stays)
        assert c.get_pids("stays") == [stays]
        c.signal("stays", "SIGKILL")
        assert rec.wait_state("stays", EventType.EXIT).exit_code == 137
        assert rec.states("stays") == [EventType.START_CONTAINER, EventType.EXIT]
        assert rec.states("dies-meanwhile") == [EventType.START_CONTAINER, EventType.EXIT]
        # A second crash is survived as well, and new containers run after it.
        os.kill(second, signal.SIGKILL)
        tasks.wait_for(lambda: remote.restarts == 2 and remote.pid != second, timeout=20)
        remote.wait_serving(30)
        c.create("after", spec(ns, "after", "echo", "after"), image=IMAGE)
        c.start("after")
        assert rec.wait_state("after", EventType.EXIT).exit_code == 0
        rec.wait_output("after", b"after\n")


def test_every_client_method_on_a_running_container(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    script = 'read line; echo "got $line"; exec sleep 300'
    c.create("web", spec(ns, "web", "sh", "-c", script), image=IMAGE, labels={"app": "web"})
    assert c.containerd.load_container("web").labels()["app"] == "web"
    pid = c.start("web", with_stdin=True)
    stdin = rec.stdins["web"]
    stdin.write(b"ping\n")  # type: ignore[attr-defined]
    rec.wait_output("web", b"got ping\n")

    c.pause("web")
    assert rec.wait_state("web", EventType.PAUSE).pid == pid
    c.resume("web")
    assert rec.wait_state("web", EventType.RESUME).pid == pid

    assert c.get_pids("web") == [pid]
    assert [p.pid for p in c.summary("web")] == [pid]
    stats = c.stats("web")
    assert stats.type_url.startswith("io.containerd.cgroups.")
    assert stats.data
    c.update_resources("web", {"memory": {"limit": 64 << 20}})

    # An exec with its own output, and one with a terminal that is resized.
    exec_spec = {**c.containerd.load_container("web").spec()["process"]}
    exec_pid = c.add_process("web", "say", {**exec_spec, "args": ["sh", "-c", "echo said; exit 4"]})
    started = rec.wait_state("web", EventType.START_PROCESS)
    assert (started.pid, started.process_id) == (exec_pid, "say")
    ended = rec.wait_state("web", EventType.EXIT_PROCESS)
    assert (ended.pid, ended.exit_code, ended.process_id) == (exec_pid, 4, "say")
    rec.wait_output("say", b"said\n")

    tty_spec = {**exec_spec, "args": ["sleep", "300"], "terminal": True}
    tty_pid = c.add_process("web", "tty", tty_spec)
    c.resize("web", "tty", 120, 40)
    assert tty_pid in c.get_pids("web")
    c.signal_process("web", "tty", "SIGKILL")
    ended = rec.wait_state("web", EventType.EXIT_PROCESS, count=2)
    assert (ended.process_id, ended.exit_code) == ("tty", 137)

    with pytest.raises(errdefs.FailedPrecondition):
        c.delete("web")
    c.signal("web", signal.SIGKILL)
    exit_ = rec.wait_state("web", EventType.EXIT)
    assert (exit_.pid, exit_.exit_code) == (pid, 137)
    assert rec.states("web") == [
        EventType.START_CONTAINER,
        EventType.PAUSE,
        EventType.RESUME,
        EventType.START_PROCESS,
        EventType.EXIT_PROCESS,
        EventType.START_PROCESS,
        EventType.EXIT_PROCESS,
        EventType.EXIT,
    ]
    with pytest.raises(errdefs.NotFound):
        c.get_pids("web")
    c.delete("web")
    assert c.containerd.list_containers() == []
    stdin.close()  # type: ignore[attr-defined]


def test_an_out_of_memory_container_is_reported_oom_then_exited(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    hog = "a=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived"
    hog_spec = oci.generate(
        ns,
        "hog",
        oci.with_default_path_env,
        oci.with_process_args("sh", "-c", hog),
        oci.with_memory_limit(16 << 20),
    )
    c.create("hog", hog_spec, image=IMAGE)
    c.start("hog")
    exit_ = rec.wait_state("hog", EventType.EXIT)
    assert (exit_.exit_code, exit_.oom_killed) == (137, True)
    states = rec.states("hog")
    assert states[0] == EventType.START_CONTAINER
    assert states[-1] == EventType.EXIT
    assert set(states[1:-1]) == {EventType.OOM}  # the kernel's every OOM kill
    assert b"survived" not in rec.output["hog"]


def test_on_failure_2_restarts_twice_then_reports_the_exit(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    c.create("flaky", spec(ns, "flaky", "sh", "-c", "echo run; exit 3"), image=IMAGE,
             restart_policy="on-failure:2")  # fmt: skip
    c.start("flaky")
    exit_ = rec.wait_state("flaky", EventType.EXIT)
    assert exit_.exit_code == 3
    time.sleep(0.5)  # no third restart comes
    assert rec.states("flaky") == [
        EventType.START_CONTAINER,
        EventType.RESTART,
        EventType.START_CONTAINER,
        EventType.RESTART,
        EventType.START_CONTAINER,
        EventType.EXIT,
    ]
    assert [i.exit_code for i in rec.infos("flaky", EventType.RESTART)] == [3, 3]
    starts = [i.pid for i in rec.infos("flaky", EventType.START_CONTAINER)]
    assert len(set(starts)) == 3
    # The last run's output is drained on its own: it may come after its exit.
    rec.wait(lambda: rec.output["flaky"].count(b"run\n") == 3)


def test_on_failure_does_not_restart_a_clean_exit_and_no_never_restarts(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    c.create("clean", spec(ns, "clean", "true"), image=IMAGE, restart_policy="on-failure")
    c.create("never", spec(ns, "never", "sh", "-c", "exit 1"), image=IMAGE, restart_policy="no")
    c.start("clean")
    c.start("never")
    assert rec.wait_state("clean", EventType.EXIT).exit_code == 0
    assert rec.wait_state("never", EventType.EXIT).exit_code == 1
    time.sleep(0.5)
    assert rec.states("clean") == rec.states("never") == [EventType.START_CONTAINER, EventType.EXIT]


def test_always_restarts_until_the_user_stops_it(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    c.create("loop", spec(ns, "loop", "true"), image=IMAGE, restart_policy="always")
    c.start("loop")
    rec.wait_state("loop", EventType.RESTART, count=3)
    c.stop("loop", timeout=5)
    rec.wait_state("loop", EventType.EXIT)
    time.sleep(0.5)
    states = rec.states("loop")
    assert states[-1] == EventType.EXIT
    assert states.count(EventType.EXIT) == 1
    assert set(states[:-1]) == {EventType.START_CONTAINER, EventType.RESTART}


def test_unless_stopped_restarts_a_crash_but_not_a_stop_by_the_user(
    client: tuple[RemoteClient, Recorder, str],
) -> None:
    c, rec, ns = client
    c.create("svc", spec(ns, "svc", "sleep", "300"), image=IMAGE, restart_policy="unless-stopped")
    pid = c.start("svc")
    os.kill(pid, signal.SIGKILL)  # a crash: not the user's doing
    restart = rec.wait_state("svc", EventType.RESTART)
    assert (restart.pid, restart.exit_code) == (pid, 137)
    again = rec.wait_state("svc", EventType.START_CONTAINER, count=2).pid
    assert again != pid and alive(again)
    c.signal("svc", "SIGKILL")  # the user's stop
    exit_ = rec.wait_state("svc", EventType.EXIT)
    assert (exit_.pid, exit_.exit_code) == (again, 137)
    time.sleep(0.5)
    assert rec.states("svc") == [
        EventType.START_CONTAINER,
        EventType.RESTART,
        EventType.START_CONTAINER,
        EventType.EXIT,
    ]
    # Started again by the user, it is restarted after a crash again.
    third = c.start("svc")
    os.kill(third, signal.SIGKILL)
    rec.wait_state("svc", EventType.RESTART, count=2)
    c.stop("svc", timeout=1)
    rec.wait_state("svc", EventType.EXIT, count=2)


def test_a_new_client_restores_a_running_container_and_follows_it(
    shared: tuple[Remote, Path, list[str]], archive: Path
) -> None:
    remote, _, namespaces = shared
    first, rec1, ns = new_client(remote, namespaces, archive)
    c_spec = spec(ns, "kept", "sh", "-c", "while true; do echo tick; sleep 0.1; done")
    first.create("kept", c_spec, image=IMAGE, restart_policy="on-failure:1")
    c_spec2 = spec(ns, "ends", "sleep", "300")
    first.create("ends", c_spec2, image=IMAGE)
    pid = first.start("kept")
    ends = first.start("ends")
    rec1.wait_output("kept", b"tick\n")
    first.close()  # the embedding program goes away
    os.kill(ends, signal.SIGKILL)  # and this one ends while nobody follows it

    rec2 = Recorder()
    second = remote.client(rec2, namespace=ns, backoff=RESTART_BACKOFF)
    try:
        assert second.restore("kept") == (True, pid)
        assert rec2.states("kept") == [EventType.RESTORE]
        rec2.output.get("kept", bytearray()).clear()
        rec2.wait_output("kept", b"tick\n")  # its output reaches the new backend
        assert second.restore("ends") == (False, ends)
        exit_ = rec2.wait_state("ends", EventType.EXIT)
        assert exit_.exit_code == 137
        with pytest.raises(errdefs.NotFound):
            second.restore("absent")
        # The restored container keeps its restart policy.
        os.kill(pid, signal.SIGKILL)
        restart = rec2.wait_state("kept", EventType.RESTART)
        assert (restart.pid, restart.exit_code) == (pid, 137)
        again = rec2.wait_state("kept", EventType.START_CONTAINER).pid
        second.stop("kept", timeout=1)
        assert rec2.wait_state("kept", EventType.EXIT).pid == again
        second.delete("kept")
        second.delete("ends")
    finally:
        second.close()


def test_cleanup_kills_and_deletes_the_tasks_and_stops_the_daemon(archive: Path) -> None:
    with running_remote() as (remote, _, namespaces):
        c, rec, ns = new_client(remote, namespaces, archive)
        c.create("doomed", spec(ns, "doomed", "sleep", "300"), image=IMAGE,
                 restart_policy="always")  # fmt: skip
        pid = c.start("doomed")
        daemon = remote.pid
        assert daemon is not None
        remote.cleanup()
        assert not alive(pid)
        assert not alive(daemon)
        exit_ = rec.wait_state("doomed", EventType.EXIT)
        assert exit_.exit_code == 137
        assert rec.states("doomed") == [EventType.START_CONTAINER, EventType.EXIT]
        with pytest.raises(errdefs.FailedPrecondition):
            remote.client(Recorder())


def test_cleanup_with_live_restore_leaves_containers_for_the_next_remote(archive: Path) -> None:
    with running_remote(live_restore=True) as (remote, base, namespaces):
        c, rec, ns = new_client(remote, namespaces, archive)
        c.create("lives", spec(ns, "lives", "sleep", "300"), image=IMAGE)
        pid = c.start("lives")
        daemon = remote.pid
        assert daemon is not None
        remote.cleanup()
        assert not alive(daemon)
        assert alive(pid)
        assert rec.states("lives") == [EventType.START_CONTAINER]

        with Remote(base / "root", base / "state", **FAST) as again:  # type: ignore[arg-type]
            rec2 = Recorder()
            c2 = again.client(rec2, namespace=ns)
            assert c2.restore("lives") == (True, pid)
            c2.signal("lives", "KILL")
            assert rec2.wait_state("lives", EventType.EXIT).exit_code == 137
            c2.delete("lives")


def test_in_process_runs_the_daemon_in_this_program(archive: Path) -> None:
    with running_remote(in_process=True) as (remote, _, namespaces):
        assert remote.pid is None
        c, rec, ns = new_client(remote, namespaces, archive)
        c.create("inproc", spec(ns, "inproc", "echo", "in-process"), image=IMAGE)
        pid = c.start("inproc")
        exit_ = rec.wait_state("inproc", EventType.EXIT)
        assert (exit_.pid, exit_.exit_code) == (pid, 0)
        rec.wait_output("inproc", b"in-process\n")
        c.delete("inproc")


def test_runtime_path_and_args_are_the_runc_the_containers_run_with(
    archive: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    runtime = tmp_path / "my-runc"
    runtime.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = --from-remote ] && shift\nexec runc "$@"\n'
    )
    runtime.chmod(0o755)
    with running_remote(runtime_path=runtime, runtime_args=["--from-remote"]) as (
        remote,
        _,
        namespaces,
    ):
        c, rec, ns = new_client(remote, namespaces, archive)
        c.create("custom", spec(ns, "custom", "echo", "ran"), image=IMAGE)
        c.start("custom")
        assert rec.wait_state("custom", EventType.EXIT).exit_code == 0
        rec.wait_output("custom", b"ran\n")
        c.delete("custom")
    lines = calls.read_text().splitlines()
    assert any(line.startswith("--from-remote ") and " create " in line for line in lines)
    assert all(line.startswith("--from-remote ") for line in lines)


#: The README's example of ``pycontainerd.remote``, exactly as printed there.
README_EXAMPLE = '''\
import shutil
import tempfile
import threading
from pathlib import Path

from pycontainerd.oci import spec as oci
from pycontainerd.remote import EventType, Remote


class Backend:
    """What the program does when its containers change state."""

    def __init__(self):
        self.done = threading.Event()
        self.printing = threading.Lock()  # events and output come on different threads

    def state_changed(self, container_id, info):
        with self.printing:
            print(container_id, info.state, info.exit_code)
        if info.state == EventType.EXIT:
            self.done.set()

    def attach_streams(self, process_id, streams):
        threading.Thread(target=self.show, args=(process_id, streams.stdout)).start()

    def show(self, process_id, stdout):
        with stdout:
            for line in stdout:
                with self.printing:
                    print(process_id, "says", line.decode().strip())


base = Path(tempfile.mkdtemp(prefix="app-", dir="/tmp"))
(base / "rootfs" / "bin").mkdir(parents=True)
shutil.copy("/bin/busybox", base / "rootfs" / "bin" / "busybox")

backend = Backend()
with Remote(base / "lib", base / "run") as remote:
    client = remote.client(backend, namespace="hello-app")
    client.containerd.import_rootfs(base / "rootfs", "local/hello:1")
    spec = oci.generate(
        "hello-app",
        "hello",
        oci.with_process_args("/bin/busybox", "sh", "-c", "echo hello; exit 3"),
    )
    client.create("hello", spec, image="local/hello:1", restart_policy="on-failure:1")
    client.start("hello")
    backend.done.wait(30)
    client.delete("hello")
shutil.rmtree(base)
'''


def test_the_readme_example_runs_as_written() -> None:
    readme = Path(__file__).parents[2] / "README.md"
    if "from pycontainerd.remote import" in readme.read_text():
        assert README_EXAMPLE in readme.read_text()
    done = subprocess.run(
        [sys.executable, "-c", README_EXAMPLE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if "says" not in line] == [
        "hello start-container 0",
        "hello restart 3",
        "hello start-container 0",
        "hello exit 3",
    ]
    assert lines.count("hello says hello") == 2


def test_a_hung_daemon_is_killed_and_restarted(archive: Path) -> None:
    with running_remote(stop_timeout=0.5) as (remote, _, namespaces):
        c, rec, ns = new_client(remote, namespaces, archive)
        c.create("survivor", spec(ns, "survivor", "sleep", "300"), image=IMAGE)
        pid = c.start("survivor")
        hung = remote.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing
        tasks.wait_for(lambda: remote.restarts == 1, timeout=30)
        assert not alive(hung)
        assert remote.pid != hung
        assert c.get_pids("survivor") == [pid]
        c.signal("survivor", "KILL")
        assert rec.wait_state("survivor", EventType.EXIT).exit_code == 137


def test_a_stop_signal_during_the_restart_backoff_calls_the_restart_off(
    shared: tuple[Remote, Path, list[str]], archive: Path
) -> None:
    remote, _, namespaces = shared
    rec = Recorder()
    ns = tasks.namespace()
    namespaces.append(ns)
    with remote.client(rec, namespace=ns, backoff=Backoff(initial=2.0, maximum=2.0)) as c:
        with open(archive, "rb") as f:
            c.containerd.import_archive(f)
        c.create(
            "slow", spec(ns, "slow", "sh", "-c", "exit 5"), image=IMAGE, restart_policy="always"
        )
        c.start("slow")
        assert rec.wait_state("slow", EventType.RESTART).exit_code == 5
        c.signal("slow", "SIGTERM")
        exit_ = rec.wait_state("slow", EventType.EXIT)
        assert exit_.exit_code == 5
        time.sleep(2.5)  # past the backoff: no start comes
        assert rec.states("slow") == [EventType.START_CONTAINER, EventType.RESTART, EventType.EXIT]
        c.delete("slow")


def test_a_daemon_already_serving_at_the_address_is_used_and_left_running(
    shared: tuple[Remote, Path, list[str]], archive: Path, tmp_path: Path
) -> None:
    remote, _, namespaces = shared
    with Remote(tmp_path / "root", tmp_path / "state", address=remote.address, **FAST) as guest:  # type: ignore[arg-type]
        assert guest.pid is None
        c, rec, ns = new_client(guest, namespaces, archive)
        c.create("guest", spec(ns, "guest", "true"), image=IMAGE)
        c.start("guest")
        assert rec.wait_state("guest", EventType.EXIT).exit_code == 0
        c.delete("guest")
    assert remote.pid is not None and alive(remote.pid)
    remote.wait_serving(5)
