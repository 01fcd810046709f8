"""pyctr loads a command's module only when the command runs.

The root group lists commands from ``cli.commands.COMMANDS`` (name, aliases,
help line) without importing them; these tests keep that list equal to the
commands themselves, and check what a start-up imports.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pycontainerd.cli import commands
from pycontainerd.cli.app import LazyCommand
from pycontainerd.cli.commands import COMMANDS
from pycontainerd.cli.main import cli

pytestmark = pytest.mark.unit

IDS = [entry.name for entry in COMMANDS]


@pytest.mark.parametrize("entry", COMMANDS, ids=IDS)
def test_lazy_entry_says_what_its_command_says(entry: LazyCommand) -> None:
    command = entry.load()
    assert command.name == entry.name
    assert tuple(getattr(command, "aliases", ())) == entry.aliases
    assert not command.hidden
    for limit in (30, 45, 78, 200):
        stand_in = click.Command(entry.name, help=entry.help)
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_every_command_module_is_listed() -> None:
    listed = {entry.module for entry in COMMANDS}
    extending = {module for entry in COMMANDS for module in entry.extends}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "command"):
            assert info.name in listed, f"{info.name} has a command but no COMMANDS entry"
        else:
            assert info.name in extending, f"{info.name} is neither a command nor extends one"
    assert len({entry.name for entry in COMMANDS}) == len(COMMANDS)


def _help(preload: bool) -> str:
    script = (
        "import click\n"
        "from pycontainerd.cli.main import cli, main\n"
        f"if {preload!r}:\n"
        "    for name in cli.lazy:\n"
        "        cli.get_command(click.Context(cli), name)\n"
        "    assert set(cli.commands) == set(cli.lazy)\n"
        "main(['--help'])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    ).stdout


def test_help_lists_every_command_as_the_loaded_commands_would() -> None:
    lazy = _help(preload=False)
    for entry in COMMANDS:
        assert f"\n  {', '.join((entry.name, *entry.aliases))} " in lazy
    assert lazy == _help(preload=True)


@pytest.mark.parametrize("entry", COMMANDS, ids=IDS)
def test_command_answers_to_its_aliases(entry: LazyCommand) -> None:
    for name in (entry.name, *entry.aliases):
        result = CliRunner().invoke(cli, [name, "--help"], prog_name="pyctr")
        assert result.exit_code == 0, result.output
        assert f"Usage: pyctr {entry.name} " in result.output


def _modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh pyctr process has imported once ``argv`` has run."""
    script = (
        "import json, sys\n"
        "from pycontainerd.cli.main import run\n"
        f"run({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _loaded(modules: set[str], *packages: str) -> list[str]:
    """Which of ``modules`` are one of ``packages`` or inside one
    (a name ending in ``.`` matches only what is inside)."""

    def matches(module: str, package: str) -> bool:
        if package.endswith("."):
            return module.startswith(package)
        return module == package or module.startswith(package + ".")

    return sorted(m for m in modules if any(matches(m, p) for p in packages))


def test_help_imports_no_command_no_client_and_no_grpc() -> None:
    modules = _modules_after(["--help"])
    assert not _loaded(
        modules,
        "grpc",
        "google.protobuf",
        "importlib.metadata",
        "asyncio",
        "pycontainerd.cli.commands.",
        "pycontainerd.client._sync",
        "pycontainerd.client._async",
        "pycontainerd.api",
    )


def test_version_imports_only_what_it_calls() -> None:
    # No daemon at that address: the command fails after the imports it needs.
    modules = _modules_after(["-a", "/nonexistent/pyctr-test.sock", "version"])
    assert "grpc" in modules
    assert "pycontainerd.client._sync.client" in modules
    assert not _loaded(
        modules,
        "importlib.metadata",
        "pycontainerd.archive",
        "pycontainerd.images",
        "pycontainerd.content",
        "pycontainerd.events",
        "pycontainerd.wire",
        "pycontainerd.client._sync.transfer",
        "pycontainerd.client._sync.containers",
        "pycontainerd.client._sync.content",
        "pycontainerd.client._sync.image",
        "pycontainerd.client._async",
        "pycontainerd.cli.commands.images",
    )
