"""config.toml: the default reads back unchanged, flags win over the file, and
every problem is one ConfigError line naming the file and the problem."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycontainerd.daemon import config, main
from pycontainerd.daemon.config import Config, ConfigError, ProxyPlugin

pytestmark = pytest.mark.unit

CONSOLE_SCRIPT = Path(sys.executable).parent / "pycontainerd"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# --- the default config ------------------------------------------------------


def test_default_config_parses_back_and_dumps_identically() -> None:
    text = main.default_config_text()
    parsed = config.parse(text, "default")
    assert config.dump(parsed) == text
    # Apart from the plugin sections it spells out, it is the built-in default.
    assert dataclasses.replace(parsed, plugins={}) == Config()


def test_config_default_console_script_prints_the_same_round_tripping_text() -> None:
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "config", "default"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == main.default_config_text()
    assert config.dump(config.parse(result.stdout)) == result.stdout


def test_default_config_written_to_a_file_loads_as_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, main.default_config_text())
    assert dataclasses.replace(config.load(path), plugins={}) == Config()


def test_missing_config_file_means_the_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "absent.toml") == Config()
    with pytest.raises(ConfigError, match=r"absent\.toml: no such file"):
        config.load(tmp_path / "absent.toml", missing_ok=False)


def test_file_values_are_read_into_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
version = 2
root = "/srv/root"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
oom_score = -999
[grpc]
  address = "/srv/p.sock"
  uid = 5
[metrics]
  address = "127.0.0.1:1338"
  grpc_histogram = true
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
""",
    )
    cfg = config.load(path)
    assert cfg.root == "/srv/root"
    assert cfg.disabled_plugins == ("io.containerd.grpc.v1.cri",)
    assert cfg.oom_score == -999
    assert cfg.grpc.address == "/srv/p.sock"
    assert cfg.grpc.uid == 5
    assert cfg.metrics == config.MetricsConfig(address="127.0.0.1:1338", grpc_histogram=True)
    assert cfg.plugin_section("io.containerd.gc.v1.scheduler") == {"pause_threshold": 0.02}
    assert cfg.plugin_section("io.containerd.nothing.v1.here") == {}


# --- command-line flags --------------------------------------------------------


class _FakeServer:
    """Stands in for the daemon: records the config the CLI built."""

    seen: list[Config] = []

    def __init__(self, cfg: Config) -> None:
        self.config = cfg

    async def serve_forever(self) -> None:
        _FakeServer.seen.append(self.config)


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the CLI without starting a server or touching the root logger."""
    recorded: dict[str, Any] = {}
    _FakeServer.seen = []
    monkeypatch.setattr(main, "Server", _FakeServer)
    monkeypatch.setattr(main.logs, "setup", lambda level: recorded.setdefault("level", level))

    def run(*args: str) -> Config:
        result = CliRunner().invoke(main.cli, list(args), prog_name="pycontainerd")
        assert result.exit_code == 0, result.output
        assert len(_FakeServer.seen) == 1
        return _FakeServer.seen.pop()

    recorded["run"] = run
    return recorded


FILE_WITH_PATHS = """
version = 2
root = "/file/root"
state = "/file/state"
oom_score = 7
[grpc]
  address = "/file/p.sock"
  max_recv_message_size = 1024
[debug]
  level = "warn"
"""


def test_cli_flags_override_file_values(tmp_path: Path, fake_daemon: dict[str, Any]) -> None:
    path = write(tmp_path, FILE_WITH_PATHS)
    cfg = fake_daemon["run"](
        "-c", str(path), "--root", "/flag/root", "--state", "/flag/state",
        "-a", "unix:///flag/p.sock", "-l", "debug",
    )  # fmt: skip
    assert cfg.root == "/flag/root"
    assert cfg.state == "/flag/state"
    assert cfg.grpc.address == "/flag/p.sock"
    assert fake_daemon["level"] == "debug"
    # What no flag names stays as the file says.
    assert cfg.oom_score == 7
    assert cfg.grpc.max_recv_message_size == 1024


def test_file_values_apply_when_no_flag_is_given(
    tmp_path: Path, fake_daemon: dict[str, Any]
) -> None:
    path = write(tmp_path, FILE_WITH_PATHS)
    cfg = fake_daemon["run"]("--config", str(path))
    assert (cfg.root, cfg.state, cfg.grpc.address) == ("/file/root", "/file/state", "/file/p.sock")
    assert fake_daemon["level"] == "warn"


def test_relative_flag_paths_become_absolute(
    tmp_path: Path, fake_daemon: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = fake_daemon["run"]("-c", "absent.toml", "--root", "r", "--state", "s", "-a", "p.sock")
    assert cfg.root == str(tmp_path / "r")
    assert cfg.state == str(tmp_path / "s")
    assert cfg.grpc.address == str(tmp_path / "p.sock")


def test_cli_reports_a_bad_config_in_one_line_and_exits_non_zero(
    tmp_path: Path, fake_daemon: dict[str, Any]
) -> None:
    path = write(tmp_path, "oom_score = 'high'\n")
    result = CliRunner().invoke(main.cli, ["-c", str(path)], prog_name="pycontainerd")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert str(path) in result.output and "oom_score" in result.output
    assert _FakeServer.seen == []


# --- errors ----------------------------------------------------------------------


BAD_CONFIGS = [
    pytest.param("oom_score = 'high'\n", ["oom_score", "expected an integer"], id="wrong-type-int"),
    pytest.param("root = 5\n", ["root", "expected a string"], id="wrong-type-str"),
    pytest.param(
        "disabled_plugins = 'cri'\n",
        ["disabled_plugins", "expected a list of strings"],
        id="wrong-type-list",
    ),
    pytest.param(
        "[metrics]\n  grpc_histogram = 'yes'\n",
        ["metrics.grpc_histogram", "expected a boolean"],
        id="wrong-type-nested",
    ),
    pytest.param("grpc = 'x'\n", ["grpc", "expected a table"], id="wrong-type-table"),
    pytest.param("bogus = 1\n", ["bogus", "unknown setting"], id="unknown-key"),
    pytest.param(
        "[grpc]\n  adress = '/x'\n", ["grpc.adress", "unknown setting"], id="unknown-nested"
    ),
    pytest.param("version = 3\n", ["version", "unsupported config version 3"], id="version-3"),
    pytest.param("version = 'two'\n", ["version", "unsupported config version"], id="version-str"),
    pytest.param("version = \n", ["invalid TOML"], id="malformed-value"),
    pytest.param("[grpc\naddress = 1\n", ["invalid TOML"], id="malformed-table"),
    pytest.param("a = 1\na = 2\n", ["invalid TOML"], id="duplicate-key"),
    pytest.param(
        "plugins = 1\n", ["plugins", "expected a table of tables"], id="plugins-not-table"
    ),
    pytest.param("[timeouts]\n  x = 5\n", ["timeouts", "duration strings"], id="timeout-not-str"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_raises_one_line_config_error_naming_file_and_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_parse_names_the_source_it_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/x\.toml: bogus: unknown setting$"):
        config.parse("bogus = 1", "/etc/x.toml")


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"root = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


# --- proxy plugins ----------------------------------------------------------------


def test_proxy_plugin_with_type_and_address_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[proxy_plugins.stargz]\n  type = "snapshot"\n  address = "/run/stargz.sock"\n',
    )
    cfg = config.load(path)
    assert cfg.proxy_plugins == {"stargz": ProxyPlugin(type="snapshot", address="/run/stargz.sock")}
    # and it survives a dump/parse round trip
    assert config.parse(config.dump(cfg)).proxy_plugins == cfg.proxy_plugins


@pytest.mark.parametrize(
    "table",
    [
        pytest.param('  type = "snapshot"\n', id="no-address"),
        pytest.param('  address = "/run/x.sock"\n', id="no-type"),
        pytest.param("", id="empty"),
    ],
)
def test_proxy_plugin_needs_type_and_address(tmp_path: Path, table: str) -> None:
    path = write(tmp_path, f"[proxy_plugins.x]\n{table}")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(excinfo.value) == f"{path}: proxy_plugins.x: type and address are required"


def test_proxy_plugin_rejects_unknown_settings(tmp_path: Path) -> None:
    path = write(tmp_path, '[proxy_plugins.x]\n  type = "snapshot"\n  address = "/a"\n  tls = 1\n')
    with pytest.raises(ConfigError, match=r"proxy_plugins\.x\.tls: unknown setting"):
        config.load(path)
