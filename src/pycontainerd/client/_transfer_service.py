"""Pull and push through the daemon's Transfer service (containerd 1.7's
``containerd.services.transfer.v1``): the daemon talks to the registry,
writes the content, unpacks and records the image; the client only names
source and destination and watches progress.

Progress comes back on a stream the client opens on the Streaming service
first and names in the request; registry credentials are answered on a
second stream when the daemon asks.  Daemons that do not offer the service
(containerd 1.6, Debian's) are pulled from client-side instead
(:func:`available` tells).  This is the sync face, used by ``pyctr``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2

from pycontainerd import errdefs, typeurl
from pycontainerd import platforms as pf
from pycontainerd.api.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from pycontainerd.api.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from pycontainerd.api.types import platform_pb2
from pycontainerd.api.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from pycontainerd.client._distribution import user_and_secret

__all__ = ["TRANSFER_PLUGIN", "TransferProgress", "available", "pull", "push"]

TRANSFER_PLUGIN = "io.containerd.transfer.v1"

#: containerd's progress events -> the states a pull reports.
_STATES = {"complete": "done", "already exists": "exists"}


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """One progress event as the daemon sent it (``ref`` names the blob)."""

    ref: str
    state: str
    offset: int
    total: int


ProgressFunc = Callable[[TransferProgress], None]


def available(client: Any) -> bool:
    """Whether the daemon behind ``client`` offers the Transfer service."""
    try:
        plugins = client.plugins(f"type=={TRANSFER_PLUGIN}")
    except errdefs.ContainerdError:
        return False
    return any(p.init_err is None for p in plugins)


class _Stream:
    """A named stream: responses handed to ``on_message`` on a thread of its
    own, whose answer (if any) is sent back."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        on_message: Callable[[any_pb2.Any], any_pb2.Any | None],
    ) -> None:
        self.id = f"{prefix}-{os.urandom(8).hex()}"
        self._sends: queue.Queue[any_pb2.Any | None] = queue.Queue()
        self._on_message = on_message
        self._error: BaseException | None = None
        stub = streaming_pb2_grpc.StreamingStub(client._channel)
        self._responses = stub.Stream(self._requests(), metadata=client._call.metadata())
        try:
            next(self._responses)  # the daemon's acknowledgement: the name is registered
        except grpc.RpcError as exc:
            raise errdefs.from_grpc(exc) from exc
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _requests(self) -> Iterator[any_pb2.Any]:
        yield typeurl.marshal_any(streaming_pb2.StreamInit(id=self.id))
        while (message := self._sends.get()) is not None:
            yield message

    def _receive(self) -> None:
        try:
            for message in self._responses:
                answer = self._on_message(message)
                if answer is not None:
                    self._sends.put(answer)
        except grpc.RpcError:
            pass  # the stream ends with the transfer
        except Exception as exc:  # a progress callback's failure is the caller's
            self._error = exc

    def close(self) -> None:
        self._sends.put(None)
        self._thread.join(10)
        if self._error is not None:
            raise self._error


def _progress_handler(progress: ProgressFunc) -> Callable[[any_pb2.Any], None]:
    def handle(message: any_pb2.Any) -> None:
        if not typeurl.is_a(message, progress_pb2.Progress):
            return
        event = progress_pb2.Progress.FromString(message.value)
        if not event.name or " " in event.event:
            return  # a sentence about the whole transfer, not a blob
        state = _STATES.get(event.event, event.event)
        progress(TransferProgress(event.name, state, event.progress, event.total))

    return handle


def _auth_handler(username: str, secret: str) -> Callable[[any_pb2.Any], any_pb2.Any]:
    # As containerd's clients answer: a secret without a username is a
    # refresh token.
    kind = registry_pb2.CREDENTIALS if username else registry_pb2.REFRESH

    def handle(message: any_pb2.Any) -> any_pb2.Any:
        del message  # one answer for every host asked about
        return typeurl.marshal_any(
            registry_pb2.AuthResponse(authType=kind, username=username, secret=secret)
        )

    return handle


def _registry(
    ref: str,
    *,
    plain_http: bool,
    hosts_dir: str | None,
    headers: Mapping[str, str] | None,
    auth_stream: str,
) -> registry_pb2.OCIRegistry:
    return registry_pb2.OCIRegistry(
        reference=ref,
        resolver=registry_pb2.RegistryResolver(
            auth_stream=auth_stream,
            headers=dict(headers or {}),
            host_dir=hosts_dir or "",
            default_scheme="http" if plain_http else "",
        ),
    )


def _platform_pb(p: pf.Platform) -> platform_pb2.Platform:
    return platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)


def _transfer(
    client: Any,
    *,
    user: str | None,
    refresh_token: str | None,
    progress: ProgressFunc | None,
    build: Callable[[str], tuple[Any, Any]],
) -> None:
    """Run one transfer with the streams it needs; ``build(auth_stream)``
    makes (source, destination) once the auth stream has its name."""
    streams: list[_Stream] = []
    try:
        auth_id = ""
        pair = user_and_secret(user, refresh_token)
        if pair is not None:
            auth = _Stream(client, "auth", _auth_handler(*pair))
            streams.append(auth)
            auth_id = auth.id
        progress_id = ""
        if progress is not None:
            watch = _Stream(client, "progress", _progress_handler(progress))
            streams.append(watch)
            progress_id = watch.id
        src, dst = build(auth_id)
        request = transfer_pb2.TransferRequest(
            source=typeurl.marshal_any(src),
            destination=typeurl.marshal_any(dst),
            options=transfer_pb2.TransferOptions(progress_stream=progress_id),
        )
        client._call.unary(transfer_pb2_grpc.TransferStub(client._channel).Transfer, request)
    finally:
        for stream in streams:
            stream.close()


def pull(
    client: Any,
    ref: str,
    *,
    unpack: bool = True,
    snapshotter: str = "",
    platform: str | None = None,
    all_platforms: bool = False,
    all_metadata: bool = False,
    labels: Mapping[str, str] | None = None,
    plain_http: bool = False,
    hosts_dir: str | None = None,
    user: str | None = None,
    refresh_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    progress: ProgressFunc | None = None,
) -> None:
    """Have the daemon pull ``ref`` into its image store (unpacked unless not ``unpack``)."""
    chosen = pf.normalize(pf.parse(platform)) if platform else pf.default()

    def build(auth_stream: str) -> tuple[Any, Any]:
        store = imagestore_pb2.ImageStore(
            name=ref, labels=dict(labels or {}), all_metadata=all_metadata
        )
        if not all_platforms:
            store.platforms.append(_platform_pb(chosen))
            # One manifest, unless every entry's metadata is wanted.
            store.manifest_limit = 0 if all_metadata else 1
        if unpack:
            store.unpacks.append(
                imagestore_pb2.UnpackConfiguration(
                    platform=_platform_pb(chosen), snapshotter=snapshotter
                )
            )
        source = _registry(
            ref,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            headers=headers,
            auth_stream=auth_stream,
        )
        return source, store

    _transfer(client, user=user, refresh_token=refresh_token, progress=progress, build=build)


def push(
    client: Any,
    remote: str,
    local: str,
    *,
    platform: str | None = None,
    plain_http: bool = False,
    hosts_dir: str | None = None,
    user: str | None = None,
    refresh_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    progress: ProgressFunc | None = None,
) -> None:
    """Have the daemon push its image ``local`` to ``remote``."""

    def build(auth_stream: str) -> tuple[Any, Any]:
        store = imagestore_pb2.ImageStore(name=local)
        if platform:
            store.platforms.append(_platform_pb(pf.normalize(pf.parse(platform))))
        target = _registry(
            remote,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            headers=headers,
            auth_stream=auth_stream,
        )
        return store, target

    _transfer(client, user=user, refresh_token=refresh_token, progress=progress, build=build)
