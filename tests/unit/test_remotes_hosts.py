"""containerd's hosts.toml: mirrors in order before the server, capabilities,
CAs relative to the host directory, headers, override_path, _default, and
docker.io's real host."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.remotes.hosts import ALL_CAPABILITIES, RegistryHost, configure_hosts

pytestmark = pytest.mark.unit


def test_no_configuration_is_the_domain_itself() -> None:
    assert configure_hosts("docker.io") == [RegistryHost("https", "registry-1.docker.io")]
    assert configure_hosts("127.0.0.1:5000", plain_http=True) == [
        RegistryHost("http", "127.0.0.1:5000")
    ]
    (host,) = configure_hosts("r.example", skip_verify=True)
    assert host.skip_verify and host.base_url == "https://r.example/v2"


def test_mirrors_come_first_in_file_order(tmp_path: Path) -> None:
    d = tmp_path / "docker.io"
    d.mkdir()
    (d / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n'
        'ca = "upstream.pem"\n'
        '[host."https://mirror-b.example"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        '  ca = ["b.pem", "/abs/b2.pem"]\n'
        "  skip_verify = true\n"
        '  [host."https://mirror-b.example".header]\n'
        '    x-one = "1"\n'
        '    x-many = ["a", "b"]\n'
        '[host."http://mirror-a.example:5000/custom/api"]\n'
        '  capabilities = ["pull"]\n'
        "  override_path = true\n"
        '[host."mirror-c.example/prefix"]\n'
    )
    hosts = configure_hosts("docker.io", hosts_dir=tmp_path)
    assert [h.base_url for h in hosts] == [
        "https://mirror-b.example/v2",
        "http://mirror-a.example:5000/custom/api",
        "https://mirror-c.example/prefix/v2",
        "https://registry-1.docker.io/v2",
    ]
    b, a, c, server = hosts
    assert b.capabilities == {"pull", "resolve"} and a.capabilities == {"pull"}
    assert c.capabilities == ALL_CAPABILITIES and server.capabilities == ALL_CAPABILITIES
    assert b.ca_files == (str(d / "b.pem"), "/abs/b2.pem") and b.skip_verify
    assert b.headers == {"x-one": ("1",), "x-many": ("a", "b")}
    assert server.ca_files == (str(d / "upstream.pem"),) and not server.skip_verify


def test_default_directory_and_server_default(tmp_path: Path) -> None:
    d = tmp_path / "_default"
    d.mkdir()
    (d / "hosts.toml").write_text('[host."https://mirror.example"]\n')
    hosts = configure_hosts("quay.io", hosts_dir=tmp_path)
    assert [h.host for h in hosts] == ["mirror.example", "quay.io"]
    # The domain's own directory wins over _default.
    (tmp_path / "quay.io").mkdir()
    (tmp_path / "quay.io" / "hosts.toml").write_text('server = "http://quay.local:81"\n')
    assert [h.base_url for h in configure_hosts("quay.io", hosts_dir=tmp_path)] == [
        "http://quay.local:81/v2"
    ]


def test_docker_certificate_files_without_hosts_toml(tmp_path: Path) -> None:
    d = tmp_path / "r.example:5000"
    d.mkdir()
    (d / "ca.crt").write_text("x")
    (d / "client.cert").write_text("x")
    (d / "client.key").write_text("x")
    (host,) = configure_hosts("r.example:5000", hosts_dir=tmp_path)
    assert host.ca_files == (str(d / "ca.crt"),)
    assert host.client_certs == ((str(d / "client.cert"), str(d / "client.key")),)


def test_tls_files_given_for_every_host_come_before_its_own(tmp_path: Path) -> None:
    """ctr's --tlscacert, --tlscert and --tlskey: every host gets them, and
    those a host's configuration names come after."""

    def hosts(hosts_dir: Path | None = None) -> list[RegistryHost]:
        return configure_hosts(
            "r.example",
            hosts_dir=hosts_dir,
            ca_files=["/etc/ca.pem"],
            client_certs=[("/etc/c.pem", "/etc/k.pem")],
        )

    (host,) = hosts()
    assert host.ca_files == ("/etc/ca.pem",)
    assert host.client_certs == (("/etc/c.pem", "/etc/k.pem"),)
    d = tmp_path / "r.example"
    d.mkdir()
    (d / "ca.crt").write_text("x")
    (host,) = hosts(tmp_path)
    assert host.ca_files == ("/etc/ca.pem", str(d / "ca.crt"))
    (d / "hosts.toml").write_text(
        '[host."https://mirror.example"]\n  client = [["m.cert", "m.key"]]\n'
    )
    mirror, server = hosts(tmp_path)
    assert mirror.client_certs == (
        ("/etc/c.pem", "/etc/k.pem"),
        (str(d / "m.cert"), str(d / "m.key")),
    )
    assert mirror.ca_files == server.ca_files == ("/etc/ca.pem",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server = [", "hosts.toml"),
        ('[host."https://m"]\ncapabilities = ["fly"]\n', "unknown capabilities"),
        ('[host."ftp://m"]\n', "invalid host"),
        ('[host."https://m"]\nca = 3\n', "ca must be"),
        ("server = 5\n", "server must be a string"),
    ],
)
def test_bad_files_are_invalid_arguments(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "hosts.toml").write_text(text)
    with pytest.raises(errdefs.InvalidArgument, match=message):
        configure_hosts("r.example", hosts_dir=tmp_path)


def test_tls_context_follows_skip_verify_and_bad_ca_is_clear(tmp_path: Path) -> None:
    import ssl

    context = RegistryHost("https", "r.example", skip_verify=True).ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    assert RegistryHost("http", "r.example").ssl_context() is None
    with pytest.raises(errdefs.InvalidArgument, match=r"TLS files for r\.example"):
        RegistryHost("https", "r.example", ca_files=(str(tmp_path / "missing.pem"),)).ssl_context()
