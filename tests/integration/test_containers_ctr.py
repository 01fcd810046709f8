"""Containers through Debian's ``ctr`` and through ``pyctr``, against our daemon.

Every flow runs with both tools: ``ctr`` proves wire compatibility, ``pyctr``
proves our CLI and client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cli import Cli, table
from tests.support.daemons import RunningDaemon

pytestmark = [pytest.mark.integration, pytest.mark.interop]


@pytest.fixture(params=["ctr", "pyctr"])
def cli(request: pytest.FixtureRequest, daemon: RunningDaemon) -> Cli:
    return Cli(request.param, daemon.address)


@pytest.fixture
def rootfs(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "rootfs").mkdir()
    yield tmp_path / "rootfs"


def test_a_terminator_before_the_command_is_not_part_of_it(cli: Cli, rootfs: Path) -> None:
    """``ROOTFS ID -- CMD -c ...``: flags after ``--`` belong to the command
    (as ctr's ``IMAGE ID -- CMD``; ctr itself, with ``--rootfs``, takes the
    ``--`` for the id)."""
    if cli.tool == "ctr":
        pytest.skip("ctr --rootfs reads the terminator as the container id")
    cli("containers", "create", "--rootfs", str(rootfs), "term", "--", "sh", "-c", "echo")
    spec = json.loads(cli("containers", "info", "--spec", "term").stdout)
    assert spec["process"]["args"] == ["sh", "-c", "echo"]
    cli("containers", "rm", "term")


def test_create_list_info_and_remove(cli: Cli, rootfs: Path) -> None:
    cli("containers", "create", "--rootfs", "--label", "team=core", str(rootfs), "web", "sh", "-x")
    rows = table(cli("containers", "ls").stdout)
    assert rows == [["CONTAINER", "IMAGE", "RUNTIME"], ["web", "-", "io.containerd.runc.v2"]]
    assert cli("containers", "ls", "-q").stdout == "web\n"

    info = json.loads(cli("containers", "info", "web").stdout)
    assert info["ID"] == "web"
    assert info["Labels"] == {"team": "core"}
    assert info["Runtime"] == {
        "Name": "io.containerd.runc.v2",
        "Options": {"type_url": "containerd.runc.v1.Options"},
    }
    spec = info["Spec"]
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["process"]["args"] == ["sh", "-x"]
    assert spec["root"]["path"] == str(rootfs)
    assert spec["linux"]["cgroupsPath"] == "/default/web"
    assert spec["annotations"] == {"team": "core"}
    only_spec = json.loads(cli("containers", "info", "--spec", "web").stdout)
    assert only_spec == spec

    cli("containers", "rm", "web")
    assert table(cli("containers", "ls").stdout) == [["CONTAINER", "IMAGE", "RUNTIME"]]
    assert cli.error("containers", "info", "web") == (
        'container "web" in namespace "default": not found'
    )


def test_second_create_with_the_same_id_already_exists(cli: Cli, rootfs: Path) -> None:
    cli("containers", "create", "--rootfs", str(rootfs), "web", "sh")
    assert cli.error("containers", "create", "--rootfs", str(rootfs), "web", "sh") == (
        'container "web": already exists'
    )


def test_bad_id_is_refused_with_containerds_message(cli: Cli, rootfs: Path) -> None:
    message = cli.error("containers", "create", "--rootfs", str(rootfs), "bad..id", "sh")
    assert message.startswith(
        'create container failed validation: container.ID: identifier "bad..id" must match'
    )


def test_label_sets_and_clears(cli: Cli, rootfs: Path) -> None:
    cli("containers", "create", "--rootfs", str(rootfs), "web", "sh")
    out = cli("containers", "label", "web", "a=1", "b=2").stdout.strip()
    assert sorted(out.split(",")) == ["a=1", "b=2"]
    assert cli("containers", "label", "web", "a=").stdout.strip() == "b=2"
    info = json.loads(cli("containers", "info", "web").stdout)
    assert info["Labels"] == {"b": "2"}
    assert cli("containers", "ls", "-q", "labels.b==2").stdout == "web\n"
    assert cli("containers", "ls", "-q", "labels.a==1").stdout == ""


def test_a_container_is_invisible_in_another_namespace(cli: Cli, rootfs: Path) -> None:
    cli("containers", "create", "--rootfs", str(rootfs), "web", "sh")
    other = cli.in_namespace("other")
    assert table(other("containers", "ls").stdout) == [["CONTAINER", "IMAGE", "RUNTIME"]]
    assert other.error("containers", "info", "web") == (
        'container "web" in namespace "other": not found'
    )
    # The same id is free there.
    other("containers", "create", "--rootfs", str(rootfs), "web", "sh")
    other("containers", "rm", "web")
    assert cli("containers", "ls", "-q").stdout == "web\n"


def test_rm_reports_a_missing_container_and_still_removes_the_others(
    cli: Cli, rootfs: Path
) -> None:
    cli("containers", "create", "--rootfs", str(rootfs), "web", "sh")
    assert cli.error("containers", "rm", "nope", "web") == (
        'container "nope" in namespace "default": not found'
    )
    assert cli("containers", "ls", "-q").stdout == ""


def test_bad_filter_is_invalid_argument(cli: Cli) -> None:
    assert "expected value or quoted" in cli.error("containers", "ls", "id==")
