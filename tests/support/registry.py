"""A real registry for tests: Debian's ``docker-registry`` on 127.0.0.1.

:func:`registry` starts it at a free port with its storage in a temporary
directory, optionally behind htpasswd Basic auth (bcrypt hashes) or behind
Bearer tokens from :class:`TokenServer`, a small token server that signs
RS256 JWTs with a throwaway certificate the registry trusts.  The process
is stopped and the directory removed whatever the test does.

:func:`push_busybox` puts a small image built from busybox-static into a
registry through our :class:`~pycontainerd.remotes.Pusher`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycontainerd.remotes import Resolver

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT, as a reference's domain
    root: Path
    log: Path
    ca_file: Path | None = None  # the CA of its certificate, when it serves TLS
    #: A client certificate and key the CA signed (the registry asks for one
    #: with ``client_auth``).
    client_cert: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{self.host}"


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1: (ca, cert, key);
    also a client certificate it signed, ``client.pem`` with ``client-key.pem``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca and subject == "127.0.0.1":  # the server
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        elif not ca:  # a client
            usage = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
            builder = builder.add_extension(usage, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("pycontainerd test CA", None, ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", ca_cert.subject, key, ca_key, False)
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    pkcs8, clear = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    paths[2].write_bytes(key.private_bytes(pem, pkcs8, clear))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = build("pycontainerd test client", ca_cert.subject, client_key, ca_key, False)
    (directory / "client.pem").write_bytes(client.public_bytes(pem))
    (directory / "client-key.pem").write_bytes(client_key.private_bytes(pem, pkcs8, clear))
    return paths


def _htpasswd(users: Mapping[str, str]) -> str:
    import bcrypt

    lines = []
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{user}:{hashed}")
    return "\n".join(lines) + "\n"


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        address, port = host.rsplit(":", 1)
        with contextlib.suppress(OSError), socket.create_connection((address, int(port)), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not listen on {host}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def registry(
    *,
    users: Mapping[str, str] | None = None,
    token: TokenServer | None = None,
    tls: bool = False,
    client_auth: bool = False,
) -> Iterator[RunningRegistry]:
    """A docker-registry on 127.0.0.1, over plain HTTP or, with ``tls``, HTTPS
    with a certificate from a throwaway CA (``client_auth``: and it wants a
    client certificate that CA signed); ``users`` turns on Basic auth,
    ``token`` Bearer tokens from that server."""
    if not os.path.exists(REGISTRY_BINARY):
        pytest.skip("docker-registry is not installed")
    root = Path(tempfile.mkdtemp(prefix="pycontainerd-registry-"))
    host = f"127.0.0.1:{free_port()}"
    config = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'data'}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {host}",
        f"  secret: {uuid.uuid4().hex}",
    ]
    ca_file = client_cert = None
    if tls or client_auth:
        ca_file, cert, key = _tls_files(root)
        config += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        client_cert = root / "client.pem", root / "client-key.pem"
        if client_auth:
            config += ["    clientcas:", f"      - {ca_file}"]
    if users:
        (root / "htpasswd").write_text(_htpasswd(users))
        config += ["auth:", "  htpasswd:", "    realm: test", f"    path: {root / 'htpasswd'}"]
    elif token is not None:
        config += [
            "auth:",
            "  token:",
            f"    realm: {token.url}/token",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {token.cert_file}",
        ]
    (root / "config.yml").write_text("\n".join(config) + "\n")
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(root / "config.yml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(host, proc, log)
        yield RunningRegistry(host, root, log, ca_file, client_cert)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens: ``users`` get what they ask for; anonymous
    requests get ``anonymous`` actions (none by default) on every repository.
    A POSTed OAuth2 ``refresh_token`` grant with one of ``refresh_tokens``
    (token -> user) gets that user's token."""

    users: Mapping[str, str]
    anonymous: tuple[str, ...] = ()
    refresh_tokens: Mapping[str, str] = field(default_factory=dict)
    service: str = "pycontainerd-test-registry"
    issuer: str = "pycontainerd-test-issuer"
    url: str = ""
    cert_file: Path = Path()
    requests: list[str] = field(default_factory=list)
    _key: object = None
    _chain: list[str] = field(default_factory=list)

    def _setup(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert_file = directory / "token-signer.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._chain = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self._key = key

    def issue(self, user: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a in self.anonymous]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._chain}
        signing_input = (
            _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        ).encode()
        assert isinstance(self._key, rsa.RSAPrivateKey)
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + _b64(signature)


@contextlib.contextmanager
def token_server(
    users: Mapping[str, str],
    *,
    anonymous: tuple[str, ...] = (),
    refresh_tokens: Mapping[str, str] | None = None,
) -> Iterator[TokenServer]:
    """A :class:`TokenServer` answering ``GET /token`` (and the OAuth2
    ``POST /token``) on 127.0.0.1 (a thread)."""
    directory = Path(tempfile.mkdtemp(prefix="pycontainerd-token-"))
    server = TokenServer(users, anonymous, dict(refresh_tokens or {}))
    server._setup(directory)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            server.requests.append(self.path)
            user = ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if server.users.get(name) != password:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad"}]})
                    return
                user = name
            scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
            token = server.issue(user, scopes)
            self._answer(200, {"access_token": token, "expires_in": 300})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(min(length, 1 << 16)).decode())
            server.requests.append(f"POST {self.path} grant_type={form.get('grant_type')}")
            user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
            if form.get("grant_type") != ["refresh_token"] or user is None:
                self._answer(401, {"error": "invalid_grant"})
                return
            scopes = [s for value in form.get("scope", []) for s in value.split(" ")]
            token = server.issue(user, scopes)
            self._answer(200, {"access_token": token, "expires_in": 300})

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        shutil.rmtree(directory, ignore_errors=True)


# -- an image to push --------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class BuiltImage:
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


_MEDIA_TYPES = {
    # (manifest, config, gzip layer)
    "oci": (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
    "docker": (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
}


def busybox_image(
    extra: bytes = b"", *, architecture: str = "amd64", media_types: str = "oci"
) -> BuiltImage:
    """A one-layer image of busybox-static, in OCI's or Docker schema 2's media
    types (``extra`` and ``architecture`` vary the config)."""
    from tests.support.tasks import busybox_layer

    manifest_type, config_type, layer_type = _MEDIA_TYPES[media_types]
    tar = busybox_layer()
    layer = Blob(layer_type, gzip.compress(tar, mtime=0))
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"extra": extra.decode()}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_blob = Blob(config_type, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": config_type,
            "digest": config_blob.digest,
            "size": config_blob.size,
        },
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    }
    return BuiltImage(Blob(manifest_type, json.dumps(manifest).encode()), config_blob, (layer,))


def image_index(images: Mapping[str, BuiltImage]) -> Blob:
    """An OCI index of ``images`` by architecture (``{"amd64": ..., "arm64": ...}``)."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": image.manifest.media_type,
                "digest": image.manifest.digest,
                "size": image.manifest.size,
                "platform": {"architecture": architecture, "os": "linux"},
            }
            for architecture, image in images.items()
        ],
    }
    return Blob(OCI_INDEX, json.dumps(index).encode())


async def push_image(
    resolver: Resolver,
    ref: str,
    image: BuiltImage,
    *,
    source_repository: str | None = None,
    tag: bool = True,
) -> dict[str, str]:
    """Push ``image`` as ``ref`` with our pusher (the manifest under the tag,
    or by digest only); what happened to each blob by digest."""
    pusher = resolver.pusher(ref)
    results = {}
    for blob in image.blobs:
        results[blob.digest] = await pusher.push(
            blob, blob.data, source_repository=source_repository
        )
    manifest = image.manifest
    results[manifest.digest] = await pusher.push(manifest, manifest.data, tag=tag)
    return results


async def push_index(resolver: Resolver, ref: str, images: Mapping[str, BuiltImage]) -> Blob:
    """Push each image (manifests by digest) and their index as ``ref``; the index."""
    for image in images.values():
        await push_image(resolver, ref, image, tag=False)
    index = image_index(images)
    await resolver.pusher(ref).push(index, index.data, tag=True)
    return index


__all__ = [
    "Blob",
    "BuiltImage",
    "RunningRegistry",
    "TokenServer",
    "busybox_image",
    "image_index",
    "push_image",
    "push_index",
    "registry",
    "token_server",
]
