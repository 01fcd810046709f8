"""pyctr's command output, checked against what Debian's ctr 1.6 prints.

The expected text was captured from ``ctr`` against containerd 1.6 (paths
changed to /var/lib/containerd: they sit in the last cell of their line, so
they do not move the columns).  Lines end in ``$`` so that the trailing
padding ctr prints survives editors that strip trailing blanks.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycontainerd import typeurl
from pycontainerd.api.events import namespace_pb2
from pycontainerd.cli.app import echo_tabbed, label_args, sorted_labels
from pycontainerd.cli.commands import events, namespaces, plugins
from pycontainerd.cli.main import cli, run
from pycontainerd.events.exchange import Envelope
from pycontainerd.wire.introspection import PluginError, PluginInfo
from pycontainerd.wire.namespaces import NamespaceInfo

pytestmark = pytest.mark.unit

ROOT = "/var/lib/containerd"
AUFS_ERROR = (
    'aufs is not supported (modprobe aufs failed: exec: "modprobe": '
    'executable file not found in $PATH ""): skip plugin'
)
PLUGINS = [
    PluginInfo(
        "io.containerd.content.v1",
        "content",
        exports={"root": f"{ROOT}/io.containerd.content.v1.content"},
    ),
    PluginInfo(
        "io.containerd.snapshotter.v1",
        "aufs",
        platforms=["linux/amd64"],
        exports={"root": f"{ROOT}/io.containerd.snapshotter.v1.aufs"},
        init_err=PluginError(2, AUFS_ERROR),
    ),
    PluginInfo(
        "io.containerd.snapshotter.v1",
        "devmapper",
        platforms=["linux/amd64"],
        init_err=PluginError(2, "devmapper not configured"),
    ),
    PluginInfo("io.containerd.snapshotter.v1", "native", platforms=["linux/amd64"]),
    PluginInfo(
        "io.containerd.monitor.v1",
        "cgroups",
        requires=["io.containerd.event.v1"],
        platforms=["linux/amd64"],
    ),
    PluginInfo("io.containerd.grpc.v1", "introspection", requires=["io.containerd.service.v1"]),
    PluginInfo("io.containerd.grpc.v1", "content", requires=["io.containerd.service.v1"]),
]

CTR_PLUGINS_LS = """\
TYPE                            ID               PLATFORMS      STATUS    $
io.containerd.content.v1        content          -              ok        $
io.containerd.snapshotter.v1    aufs             linux/amd64    skip      $
io.containerd.snapshotter.v1    devmapper        linux/amd64    error     $
io.containerd.snapshotter.v1    native           linux/amd64    ok        $
io.containerd.monitor.v1        cgroups          linux/amd64    ok        $
io.containerd.grpc.v1           introspection    -              ok        $
io.containerd.grpc.v1           content          -              ok        $
""".replace("$\n", "\n")

CTR_PLUGINS_LS_DETAILED = f"""\
Type:          io.containerd.content.v1$
ID:            content$
Exports:      $
               root      {ROOT}/io.containerd.content.v1.content$
                            $
Type:          io.containerd.snapshotter.v1$
ID:            aufs$
Platforms:     linux/amd64$
Exports:      $
               root      {ROOT}/io.containerd.snapshotter.v1.aufs$
Error:        $
               Code:        Unknown$
               Message:     {AUFS_ERROR}$
                               $
Type:          io.containerd.snapshotter.v1$
ID:            devmapper$
Platforms:     linux/amd64$
Error:        $
               Code:        Unknown$
               Message:     devmapper not configured$
                               $
Type:          io.containerd.snapshotter.v1$
ID:            native$
Platforms:     linux/amd64$
                      $
Type:          io.containerd.monitor.v1$
ID:            cgroups$
Requires:     $
               io.containerd.event.v1$
Platforms:     linux/amd64$
                      $
Type:          io.containerd.grpc.v1$
ID:            introspection$
Requires:     $
               io.containerd.service.v1$
                      $
Type:          io.containerd.grpc.v1$
ID:            content$
Requires:     $
               io.containerd.service.v1$
""".replace("$\n", "\n")


def test_plugins_ls_table_matches_ctr(capsys: pytest.CaptureFixture[str]) -> None:
    echo_tabbed(
        "".join("".join(f"{c}\t" for c in row) + "\n" for row in plugins.table_rows(PLUGINS)),
        minwidth=4,
        tabwidth=8,
        padding=4,
    )
    assert capsys.readouterr().out == CTR_PLUGINS_LS


def test_plugins_ls_detailed_matches_ctr(capsys: pytest.CaptureFixture[str]) -> None:
    echo_tabbed(plugins.detailed_text(PLUGINS), minwidth=4, tabwidth=8, padding=4)
    assert capsys.readouterr().out == CTR_PLUGINS_LS_DETAILED


def test_plugin_status_and_platforms() -> None:
    rows = plugins.table_rows(
        [PluginInfo("t", "i", platforms=["linux/arm64", "linux/amd64", "linux/amd64"])]
    )
    assert rows[1] == ["t", "i", "linux/amd64,linux/arm64", "ok"]


def test_namespaces_table_sorts_labels_as_ctr() -> None:
    rows = namespaces.table_rows(
        [NamespaceInfo("ns1", {"k": "true", "c": "d", "a": "b"}), NamespaceInfo("empty")]
    )
    assert rows == [["NAME", "LABELS"], ["ns1", "a=b,c=d,k=true"], ["empty", ""]]


def test_label_args_read_like_ctr() -> None:
    assert label_args(["a=b", "flag", "c=", "d=e=f", "a=z"]) == {
        "a": "z",
        "flag": "true",
        "c": "",
        "d": "e=f",
    }
    assert sorted_labels({"b": "1", "a": "2"}) == "a=2,b=1"


def envelope(event: object | None, **kw: str) -> Envelope:
    from google.protobuf import any_pb2

    return Envelope(
        timestamp=dt.datetime(2026, 11, 23, 9, 28, 33, 593035, tzinfo=dt.UTC),
        namespace=kw.get("namespace", "default"),
        topic=kw.get("topic", "/namespaces/create"),
        event=typeurl.marshal_any(event) if event is not None else any_pb2.Any(),  # type: ignore[arg-type]
    )


def test_event_line_matches_ctr() -> None:
    env = envelope(namespace_pb2.NamespaceCreate(name="ns3"))
    assert events.render_line(env) == (
        '2026-11-23 09:28:33.593035 +0000 UTC default /namespaces/create {"name":"ns3"}'
    )


def test_event_without_payload_keeps_go_println_trailing_space() -> None:
    assert events.render_line(envelope(None, topic="/x")).endswith(" default /x ")


def test_event_json_line() -> None:
    env = envelope(namespace_pb2.NamespaceDelete(name="ns3"), namespace="ns3")
    assert events.render_json(env) == (
        '{"timestamp":"2026-11-23T09:28:33.593035Z","namespace":"ns3",'
        '"topic":"/namespaces/create","type":"containerd.events.NamespaceDelete",'
        '"event":{"name":"ns3"}}'
    )


def test_help_lists_commands_with_their_aliases() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "namespaces, namespace, ns" in result.output
    assert "plugins, plugin" in result.output
    result = CliRunner().invoke(cli, ["ns", "list", "--help"])
    assert result.exit_code == 0
    assert "Usage: cli namespaces ls" in result.output


def test_usage_errors_print_pyctr_prefix_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["plugins", "ls", "--bogus"]) == 1
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last.startswith("pyctr: No such option") and "--bogus" in last
    assert run(["nonesuch"]) == 1
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last.startswith("pyctr: No such command") and "nonesuch" in last


def test_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--timeout", "1x", "version"]) == 1
    assert "invalid duration '1x'" in capsys.readouterr().err


def test_unreachable_daemon_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = str(tmp_path / "absent.sock")
    assert run(["-a", address, "namespaces", "ls"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'pyctr: failed to dial "{address}": ')
    assert err.count("\n") == 1


def test_connect_timeout_gives_up_with_deadline_exceeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = str(tmp_path / "absent.sock")
    assert run(["-a", address, "--connect-timeout", "200ms", "version"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("Client:\n")  # the client half prints first, as in ctr
    assert (
        captured.err
        == f'pyctr: failed to dial "{address}": context deadline exceeded: unavailable\n'
    )


def test_environment_supplies_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = str(tmp_path / "from-env.sock")
    monkeypatch.setenv("CONTAINERD_ADDRESS", address)
    assert run(["plugins", "ls"]) == 1
    assert f'"{address}"' in capsys.readouterr().err


def test_cli_never_imports_the_daemon_side() -> None:
    # Commands and client services load when used: load them all to see everything.
    code = (
        "import importlib, pkgutil, sys, pycontainerd.cli.main;"
        "from pycontainerd.cli.commands import COMMANDS;"
        "[entry.load() for entry in COMMANDS];"
        "import pycontainerd.client._async, pycontainerd.client._sync;"
        "[importlib.import_module(f'{p.__name__}.{m.name}')"
        " for p in (pycontainerd.client._async, pycontainerd.client._sync)"
        " for m in pkgutil.iter_modules(p.__path__)];"
        "bad = [m for m in sys.modules if m.split('.')[:2] in"
        " (['pycontainerd','services'], ['pycontainerd','daemon'], ['pycontainerd','metadata'])];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
