"""Task IO through ``binary://`` loggers and ``file://`` logs, and the
``/tasks/oom`` event, with Debian's ``ctr`` on our daemon (issue 11, item 3):
on our shim and, to prove the daemon's side alone, on Go's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli
from tests.integration.test_images_ctr_acceptance import build_oci_archive
from tests.support import tasks
from tests.support.ctr_events import ctr_events

pytestmark = pytest.mark.integration

IMAGE = tasks.IMAGE

#: containerd's binary logger protocol: stdout on fd 3, stderr on fd 4, and
#: fd 5 closed once the logger is ready; the URI's query as ``key value``
#: arguments; CONTAINER_ID and CONTAINER_NAMESPACE in the environment.
LOGGER = """#!/bin/sh
dir="$2"
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID" > "$dir/who"
cat <&3 > "$dir/stdout" 5>&- &
cat <&4 > "$dir/stderr" 5>&- &
exec 5>&-
wait
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "oci.tar"
    build_oci_archive(path, IMAGE, tasks.busybox_layer())
    return path


@pytest.fixture(scope="module", params=tasks.SHIMS)
def ctr(request: pytest.FixtureRequest, archive: Path) -> Iterator[Cli]:
    ns = tasks.namespace()
    with tasks.daemon(tasks.shim_config(request.param), [ns]) as d:
        cli = Cli("ctr", d.address, ns)
        cli("images", "import", str(archive))
        yield cli


def _text(path: Path) -> str:
    """``path``'s text; empty while it does not exist."""
    return path.read_text() if path.exists() else ""


def test_a_binary_logger_gets_the_output_and_the_containers_names(ctr: Cli, tmp_path: Path) -> None:
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    ctr(
        "run",
        "--rm",
        "--log-uri",
        f"binary://{logger}?dir={out}",
        IMAGE,
        "logged",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2",
    )
    # The logger copies each stream on its own, and may still be at it when ``ctr run`` returns.
    tasks.wait_for(lambda: _text(out / "stdout") == "to-stdout\n")
    tasks.wait_for(lambda: _text(out / "stderr") == "to-stderr\n")
    assert (out / "who").read_text() == f"{ctr.namespace}/logged\n"


def test_a_file_log_gets_both_streams(
    ctr: Cli, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Go's shim (containerd 1.6) copies both streams into the file through
    # one descriptor, which its stdout copy closes when stdout ends: a line on
    # stderr not copied by then is lost ("error copying stderr" in its log).
    # There stderr speaks first and stdout a second later; our shim gets the
    # order Go's loses, the last line on stderr just before the exit.
    go = request.node.callspec.params["ctr"] == "go"
    script = "echo two >&2; sleep 1; echo one" if go else "echo one; echo two >&2"
    log = tmp_path / "task.log"
    ctr("run", "--rm", "--log-uri", f"file://{log}", IMAGE, "filed", "sh", "-c", script)
    # The shim copies each stream on its own: the last line may land just after the exit.
    tasks.wait_for(lambda: len(log.read_text().splitlines()) == 2)
    assert sorted(log.read_text().splitlines()) == ["one", "two"]


def test_a_container_over_its_memory_limit_is_reported_oom_and_exits_137(ctr: Cli) -> None:
    with ctr_events(ctr.binary, ctr.address, ctr.namespace) as events:
        hog = ctr(
            "run",
            "--rm",
            "--memory-limit",
            str(16 << 20),
            IMAGE,
            "hog",
            "sh",
            "-c",
            "a=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived",
            ok=False,
        )
        assert hog.returncode == 137, hog.stderr
        assert "survived" not in hog.stdout
        # The shim forwards its events on its own: the last may come after
        # ``ctr run`` has returned.  ``--rm`` deletes the task, so the
        # task's delete is the last of its events.
        seen = events.until(
            lambda e: e.topic == "/tasks/delete" and e.event.get("container_id") == "hog"
        )
    topics = [e.topic for e in seen if e.event.get("container_id") == "hog"]
    assert "/tasks/oom" in topics, seen
    assert "/tasks/exit" in topics, seen
    assert topics.index("/tasks/oom") < topics.index("/tasks/exit")
