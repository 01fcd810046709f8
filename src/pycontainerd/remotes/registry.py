"""Resolver, fetcher and pusher for the OCI distribution API (Docker Registry v2).

containerd's ``remotes/docker``, in asyncio:

* :meth:`Resolver.resolve` turns a reference into the descriptor of its root
  manifest or index: ``HEAD /v2/<repo>/manifests/<tag|digest>`` with the
  manifest media types in ``Accept``, falling back to ``GET`` (body capped at
  :data:`MAX_MANIFEST_SIZE`, digested here) when the HEAD answer lacks the
  digest, the size or the type.  Hosts are tried in order (mirrors first);
  a 404 from all of them is ``NotFound`` naming the reference.
* :meth:`Fetcher.fetch` streams one blob or manifest and verifies it: every
  byte is digested and counted; a byte past the descriptor's size fails at
  once, a short or different blob fails at the end.  The iteration ends
  normally only when the whole blob checked out, so a caller commits on
  normal end and discards on any exception.  A connection dropped mid-body
  is resumed with ``Range: bytes=N-`` (at most :data:`MAX_RESUMES` times in a
  row without progress).
* :meth:`Pusher.push` uploads one descriptor: skipped when the registry has
  it (HEAD), mounted from another repository of the same registry when a
  source is known, else uploaded monolithically (POST, PUT) or in chunks
  (POST, PATCH..., PUT).  Manifests are PUT with their media type.

Nothing here touches a content store: bytes come out of :meth:`Fetcher.fetch`
and go into :meth:`Pusher.push`; pull and push orchestration sit above.
Descriptors are taken structurally (anything with ``media_type``, ``digest``
and ``size``, such as :class:`pycontainerd.images.Descriptor`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlencode

from pycontainerd import digest as digests
from pycontainerd import errdefs
from pycontainerd import reference as references
from pycontainerd.remotes import _http
from pycontainerd.remotes._errors import status_error
from pycontainerd.remotes.auth import Authorizer, Credentials, parse_challenges
from pycontainerd.remotes.hosts import (
    CAPABILITY_PULL,
    CAPABILITY_PUSH,
    CAPABILITY_RESOLVE,
    RegistryHost,
    configure_hosts,
    filter_hosts,
)

__all__ = [
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "MAX_RESUMES",
    "DescriptorLike",
    "Fetcher",
    "PushResult",
    "Pusher",
    "ResolvedDescriptor",
    "Resolver",
]

log = logging.getLogger(__name__)

#: Largest manifest or index read into memory (containerd's limit too).
MAX_MANIFEST_SIZE = 4 << 20
#: Most resumes in a row that bring no new byte before a fetch gives up.
MAX_RESUMES = 5

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
#: The media types fetched from ``/manifests/`` and PUT there.
MANIFEST_MEDIA_TYPES = frozenset({_OCI_INDEX, _OCI_MANIFEST, _DOCKER_LIST, _DOCKER_MANIFEST})
#: The ``Accept`` header of a resolve (containerd's list and order).
MANIFEST_ACCEPT = ", ".join([_DOCKER_MANIFEST, _DOCKER_LIST, _OCI_MANIFEST, _OCI_INDEX, "*/*"])


class DescriptorLike(Protocol):
    """What the remotes need of a descriptor."""

    @property
    def media_type(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ResolvedDescriptor:
    """The root descriptor a reference resolves to."""

    media_type: str
    digest: str
    size: int


PushResult = Literal["exists", "mounted", "uploaded"]
#: Bytes to push: in memory, or a callable opening a fresh stream of them.
PushData = bytes | Callable[[], AsyncIterable[bytes]]


def _hasher(digest: str) -> hashlib._Hash:
    digests.validate(digest)
    return hashlib.new(digest.partition(":")[0])


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip()


class _Session:
    """Requests to the hosts of one repository, with auth and host headers."""

    def __init__(self, resolver: Resolver, ref: references.Reference, push: bool) -> None:
        self.resolver = resolver
        self.ref = ref
        self.repository = ref.path
        self.scopes = [f"repository:{ref.path}:{'pull,push' if push else 'pull'}"]
        self.hosts = resolver._hosts_for(ref.domain)

    def url(self, host: RegistryHost, *parts: str, query: Sequence[tuple[str, str]] = ()) -> str:
        path = "/".join([self.repository, *(quote(p, safe=":") for p in parts)])
        url = f"{host.base_url}/{path}"
        return url + ("?" + urlencode(query) if query else "")

    async def request(
        self,
        method: str,
        host: RegistryHost,
        url: str | _http.URL,
        *,
        headers: Mapping[str, str] | None = None,
        body: _http.RequestBody | None = None,
        extra_scopes: Sequence[str] = (),
    ) -> _http.Response:
        """Send, answering one authentication challenge if the registry asks."""
        resolver = self.resolver
        scopes = [*self.scopes, *extra_scopes]
        send = {k: ", ".join(v) for k, v in resolver.headers.items()}
        send.update({k: ", ".join(v) for k, v in host.headers.items()})
        send.update(headers or {})
        context = resolver._ssl_context(host)
        auth = resolver.authorizer.authorization(host.host, scopes)
        if auth is not None:
            send["Authorization"] = auth
        response = await resolver.http.request(
            method, url, headers=send, body=body, ssl_context=context
        )
        replayable = body is None or isinstance(body, bytes)
        if response.status != 401 or not replayable:
            return response
        challenges = parse_challenges(response.headers.get_all("www-authenticate"))
        await response.discard()
        send["Authorization"] = await resolver.authorizer.answer(
            host.host, challenges, scopes, ssl_context=context, refresh=auth is not None
        )
        return await resolver.http.request(
            method, url, headers=send, body=body, ssl_context=context
        )


class Resolver:
    """Resolves references and makes fetchers and pushers for them.

    One resolver holds one connection pool and one token cache; share it
    across a pull's concurrent fetches and close it (``async with``) when done.
    ``hosts`` maps a reference's domain to its hosts; by default
    :func:`~pycontainerd.remotes.hosts.configure_hosts` with ``hosts_dir``,
    ``plain_http``, ``skip_verify``, ``ca_files`` and ``client_certs``
    (``(cert, key)`` pairs).  ``headers`` go on every request.
    ``proxy``: True takes ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from
    the environment (containerd's behaviour), a URL names an ``http://``
    proxy (``user:pass@`` for its Basic auth), False uses none.
    ``http_dump`` and ``http_trace`` log the HTTP exchanges and connections
    (see :mod:`pycontainerd.remotes._http`), as ctr's flags of those names.
    """

    def __init__(
        self,
        *,
        hosts: Callable[[str], Sequence[RegistryHost]] | None = None,
        hosts_dir: str | Path | None = None,
        plain_http: bool = False,
        skip_verify: bool = False,
        ca_files: Sequence[str] = (),
        client_certs: Sequence[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        proxy: str | bool = True,
        http: _http.HttpClient | None = None,
        http_dump: bool = False,
        http_trace: bool = False,
    ) -> None:
        if hosts is None:

            def hosts(domain: str) -> Sequence[RegistryHost]:
                return configure_hosts(
                    domain,
                    hosts_dir=hosts_dir,
                    plain_http=plain_http,
                    skip_verify=skip_verify,
                    ca_files=ca_files,
                    client_certs=client_certs,
                )

        self._hosts = hosts
        if http is None:
            http = _http.HttpClient(
                # True: the environment's proxy settings (the client's default).
                proxy=_http.proxy_from_environment if proxy is True else proxy or None,
                dump=http_dump,
                trace=http_trace,
            )
            self._own_http = True
        else:
            self._own_http = False
        self.http = http
        self.authorizer = Authorizer(self.http, credentials)
        self.headers: dict[str, tuple[str, ...]] = {
            k: (v,) if isinstance(v, str) else tuple(v) for k, v in (headers or {}).items()
        }
        self._contexts: dict[tuple[object, ...], ssl.SSLContext | None] = {}

    async def __aenter__(self) -> Resolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def _hosts_for(self, domain: str) -> list[RegistryHost]:
        return list(self._hosts(domain))

    def _ssl_context(self, host: RegistryHost) -> ssl.SSLContext | None:
        # One context per host settings: the pool keys connections by context.
        key = (host.scheme, host.host, host.ca_files, host.client_certs, host.skip_verify)
        if key not in self._contexts:
            self._contexts[key] = host.ssl_context()
        return self._contexts[key]

    async def resolve(self, ref: str) -> tuple[str, ResolvedDescriptor]:
        """The normalised name of ``ref`` and the descriptor it points at."""
        parsed = references.parse_docker_ref(ref)
        name = str(parsed)
        session = _Session(self, parsed, push=False)
        obj = parsed.digest or parsed.tag
        capability = CAPABILITY_PULL if parsed.digest else CAPABILITY_RESOLVE
        hosts = filter_hosts(session.hosts, capability)
        if not hosts:
            raise errdefs.NotFound(f"{name}: no host is configured to {capability} it")
        first_error: errdefs.ContainerdError | None = None
        for host in hosts:
            try:
                desc = await self._resolve_at(session, host, obj, parsed.digest, name)
            except errdefs.NotFound:
                continue
            except errdefs.ContainerdError as exc:
                log.debug("resolve %s at %s: %s", name, host.host, exc)
                if first_error is None:
                    first_error = exc
                continue
            return name, desc
        if first_error is not None:
            raise first_error
        raise errdefs.NotFound(f"{name}: not found")

    async def _resolve_at(
        self, session: _Session, host: RegistryHost, obj: str, ref_digest: str, name: str
    ) -> ResolvedDescriptor:
        url = session.url(host, "manifests", obj)
        headers = {"Accept": MANIFEST_ACCEPT}
        async with await session.request("HEAD", host, url, headers=headers) as response:
            if response.status == 200:
                media_type = _media_type(response.headers.get("content-type"))
                header_digest = response.headers.get("docker-content-digest") or ""
                size = response.content_length
                digest = ref_digest or header_digest
                if ref_digest and header_digest and header_digest != ref_digest:
                    raise errdefs.FailedPrecondition(
                        f"{name}: registry answered digest {header_digest}, expected {ref_digest}"
                    )
                if digest and size and media_type in MANIFEST_MEDIA_TYPES:
                    if size > MAX_MANIFEST_SIZE:
                        raise _manifest_too_large(name, size)
                    digests.validate(digest)
                    return ResolvedDescriptor(media_type, digest, size)
            elif response.status not in (404, 405):
                raise await status_error(response, name)
            elif response.status == 404:
                raise errdefs.NotFound(f"{name}: not found")
        # The HEAD answer was incomplete (or HEAD is not allowed): GET the body.
        async with await session.request("GET", host, url, headers=headers) as response:
            if response.status != 200:
                raise await status_error(response, name)
            length = response.content_length
            if length is not None and length > MAX_MANIFEST_SIZE:
                raise _manifest_too_large(name, length)
            try:
                body = await response.read(MAX_MANIFEST_SIZE)
            except errdefs.ResourceExhausted:
                raise _manifest_too_large(name, None) from None
            media_type = _media_type(response.headers.get("content-type"))
        algorithm = ref_digest.partition(":")[0] if ref_digest else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
        if ref_digest and digest != ref_digest:
            raise errdefs.FailedPrecondition(
                f"{name}: unexpected manifest digest {digest}, expected {ref_digest}"
            )
        if media_type not in MANIFEST_MEDIA_TYPES:
            media_type = _sniff_media_type(body) or media_type
        return ResolvedDescriptor(media_type, digest, len(body))

    def fetcher(self, ref: str) -> Fetcher:
        """A fetcher of ``ref``'s repository (the tag or digest does not matter)."""
        return Fetcher(_Session(self, references.parse_docker_ref(ref), push=False))

    def pusher(self, ref: str) -> Pusher:
        """A pusher to ``ref``'s repository; manifests pushed with ``tag=True`` get its tag."""
        return Pusher(_Session(self, references.parse_docker_ref(ref), push=True))


def _manifest_too_large(name: str, size: int | None) -> errdefs.ResourceExhausted:
    got = f"{size} bytes" if size is not None else "larger"
    return errdefs.ResourceExhausted(
        f"{name}: manifest is {got}, over the {MAX_MANIFEST_SIZE}-byte limit"
    )


def _sniff_media_type(body: bytes) -> str:
    """The ``mediaType`` a manifest names itself with, when the server gave none."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    value = doc.get("mediaType")
    if isinstance(value, str):
        return value
    if "manifests" in doc:
        return _OCI_INDEX
    if "layers" in doc or "config" in doc:
        return _OCI_MANIFEST
    return ""


class Fetcher:
    """Streams verified blobs and manifests of one repository."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def fetch(
        self,
        desc: DescriptorLike,
        *,
        offset: int = 0,
        digest_state: hashlib._Hash | None = None,
    ) -> AsyncIterator[bytes]:
        """The bytes of ``desc`` from ``offset`` on, verified (see the module docstring).

        ``offset`` continues an interrupted download (a content ingest that
        holds the first bytes): the rest is asked for with a ``Range``, or
        read past when the registry ignores it.  The whole digest is checked
        only if ``digest_state`` is a hash object already fed those first
        bytes; otherwise only the size is, and the digest is the writer's to
        check.  Close the iterator (``contextlib.aclosing``) when stopping early.

        Errors: ``NotFound`` when no host has it, ``FailedPrecondition`` when
        the bytes are not the descriptor's (size or digest), ``Unavailable``
        when the connection cannot be resumed.
        """
        session = self._session
        hasher = _hasher(desc.digest) if digest_state is None else digest_state
        verify_digest = offset == 0 or digest_state is not None
        if desc.size < 0:
            raise errdefs.InvalidArgument(f"descriptor {desc.digest}: negative size")
        if not 0 <= offset <= desc.size:
            raise errdefs.InvalidArgument(
                f"{desc.digest}: offset {offset} outside the blob's {desc.size} bytes"
            )
        is_manifest = desc.media_type in MANIFEST_MEDIA_TYPES
        if is_manifest and desc.size > MAX_MANIFEST_SIZE:
            raise _manifest_too_large(f"{session.ref.name}@{desc.digest}", desc.size)
        response = await self._open(desc, is_manifest, offset)
        received = offset
        stalls = 0
        try:
            while True:
                try:
                    async for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > desc.size:
                            raise errdefs.FailedPrecondition(
                                f"{desc.digest}: the registry sent more than the expected"
                                f" {desc.size} bytes"
                            )
                        # Digested here, not in a thread: on two cores the
                        # registry, the receive and sha256 cannot all overlap,
                        # and handing chunks over cost more than it saved.
                        hasher.update(chunk)
                        stalls = 0
                        yield chunk
                    break
                except _http.ConnectionLost as exc:
                    await response.aclose()
                    stalls += 1
                    if stalls > MAX_RESUMES:
                        raise errdefs.Unavailable(
                            f"{desc.digest}: connection lost at byte {received} of"
                            f" {desc.size}, {MAX_RESUMES} resumes failed: {exc.message}"
                        ) from exc
                    log.debug("fetch %s: %s; resuming at %d", desc.digest, exc, received)
                    response = await self._resume(response.url, desc, received, exc)
        finally:
            await response.aclose()
        if received != desc.size:
            raise errdefs.FailedPrecondition(
                f"{desc.digest}: failed size validation: {received} != {desc.size}"
            )
        actual = f"{desc.digest.partition(':')[0]}:{hasher.hexdigest()}"
        if verify_digest and actual != desc.digest:
            raise errdefs.FailedPrecondition(
                f"unexpected commit digest {actual}, expected {desc.digest}"
            )

    async def fetch_bytes(self, desc: DescriptorLike, *, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """The whole verified blob in memory, refused when over ``limit`` bytes
        (for manifests, indexes and configs)."""
        if desc.size > limit:
            raise errdefs.ResourceExhausted(
                f"{desc.digest}: {desc.size} bytes, over the {limit}-byte limit"
            )
        return b"".join([chunk async for chunk in self.fetch(desc)])

    async def _open(self, desc: DescriptorLike, is_manifest: bool, offset: int) -> _http.Response:
        session = self._session
        hosts = filter_hosts(session.hosts, CAPABILITY_PULL)
        what = f"{session.ref.name}@{desc.digest}"
        kinds = ["manifests", "blobs"] if is_manifest else ["blobs"]
        first_error: errdefs.ContainerdError | None = None
        headers = {"Accept": f"{desc.media_type}, */*" if desc.media_type else "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        for kind in kinds:
            for host in hosts:
                try:
                    response = await session.request(
                        "GET", host, session.url(host, kind, desc.digest), headers=headers
                    )
                except errdefs.ContainerdError as exc:
                    first_error = first_error or exc
                    continue
                if response.status == 206 and offset:
                    await _check_range(response, desc, offset)
                    return response
                if response.status == 200:
                    length = response.content_length
                    if length is not None and length > desc.size:
                        await response.aclose()
                        raise errdefs.FailedPrecondition(
                            f"{desc.digest}: the registry offers {length} bytes, more than"
                            f" the expected {desc.size}"
                        )
                    if offset:
                        # The registry ignored the Range: read past what we have.
                        await _skip(response, offset, desc)
                    return response
                error = await status_error(response, what)
                if not isinstance(error, errdefs.NotFound):
                    first_error = first_error or error
        if first_error is not None:
            raise first_error
        raise errdefs.NotFound(f"{what}: not found")

    async def _resume(
        self, url: _http.URL, desc: DescriptorLike, offset: int, cause: Exception
    ) -> _http.Response:
        """A GET of the rest of the blob, from the URL that was serving it."""
        session = self._session
        host = next(
            (h for h in session.hosts if h.host == url.netloc),
            session.hosts[0] if session.hosts else None,
        )
        headers = {"Range": f"bytes={offset}-", "Accept": "*/*"}
        if host is None or url.netloc != host.host:
            # A redirect target (blob storage): ask it directly, no registry auth.
            response = await session.resolver.http.request("GET", url, headers=headers)
        else:
            response = await session.request("GET", host, url, headers=headers)
        if response.status == 206:
            await _check_range(response, desc, offset)
            return response
        if response.status == 200:
            await response.aclose()
            raise errdefs.Unavailable(
                f"{desc.digest}: connection lost at byte {offset} of {desc.size}, and the"
                " registry does not support range requests to resume"
            ) from cause
        raise await status_error(response, f"{session.ref.name}@{desc.digest}")


async def _check_range(response: _http.Response, desc: DescriptorLike, offset: int) -> None:
    content_range = response.headers.get("content-range") or ""
    if not content_range.startswith(f"bytes {offset}-"):
        await response.aclose()
        raise errdefs.Unavailable(
            f"{desc.digest}: asked for the bytes from {offset} on, and the registry"
            f" answered with {content_range or 'an unknown range'}"
        )


async def _skip(response: _http.Response, count: int, desc: DescriptorLike) -> None:
    """Read past the first ``count`` bytes of a body."""
    try:
        while count:
            data = await response.read_chunk(min(count, _http.CHUNK_SIZE))
            if not data:
                raise errdefs.FailedPrecondition(
                    f"{desc.digest}: the registry sent fewer than the expected {desc.size} bytes"
                )
            count -= len(data)
    except BaseException:
        await response.aclose()
        raise


class Pusher:
    """Pushes blobs and manifests to one repository."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        hosts = filter_hosts(session.hosts, CAPABILITY_PUSH)
        self._host = hosts[0] if hosts else None

    def _push_host(self) -> RegistryHost:
        if self._host is None:
            raise errdefs.FailedPrecondition(
                f"{self._session.ref.name}: no host is configured to push to"
            )
        return self._host

    async def exists(self, desc: DescriptorLike, *, tag: bool = False) -> bool:
        """Whether the registry has ``desc`` (by digest, or as the tag with ``tag``)."""
        session = self._session
        host = self._push_host()
        is_manifest = desc.media_type in MANIFEST_MEDIA_TYPES
        obj = session.ref.tag if tag and session.ref.tag else desc.digest
        url = session.url(host, "manifests" if is_manifest else "blobs", obj)
        headers = {"Accept": MANIFEST_ACCEPT} if is_manifest else {}
        async with await session.request("HEAD", host, url, headers=headers) as response:
            if response.status == 404:
                return False
            if response.status != 200:
                raise await status_error(response, f"{session.ref.name}@{desc.digest}")
            if tag:
                return response.headers.get("docker-content-digest") == desc.digest
            return True

    async def push(
        self,
        desc: DescriptorLike,
        data: PushData,
        *,
        tag: bool = False,
        source_repository: str | None = None,
        chunk_size: int | None = None,
    ) -> PushResult:
        """Put ``desc`` in the repository; say whether it was there, mounted or uploaded.

        Manifests and indexes go to ``/manifests/<digest>``, or to the
        reference's tag with ``tag``.  ``source_repository`` (a path in the
        same registry, ``library/busybox``) is tried for a cross-repository
        mount first.  With ``chunk_size``, a blob larger than that goes up in
        PATCHes of that size.  The bytes sent are digested and counted; a
        mismatch fails before the upload is committed where the protocol
        allows (chunked), and the registry refuses it otherwise.
        """
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            return await self._push_manifest(desc, data, tag=tag)
        if await self.exists(desc):
            return "exists"
        return await self._push_blob(desc, data, source_repository, chunk_size)

    async def _push_manifest(
        self, desc: DescriptorLike, data: PushData, *, tag: bool
    ) -> PushResult:
        session = self._session
        host = self._push_host()
        if not tag and await self.exists(desc):
            return "exists"
        body = data if isinstance(data, bytes) else await _collect(data(), MAX_MANIFEST_SIZE)
        if len(body) > MAX_MANIFEST_SIZE:
            raise _manifest_too_large(f"{session.ref.name}@{desc.digest}", len(body))
        _verify(desc, body)
        obj = session.ref.tag if tag and session.ref.tag else desc.digest
        url = session.url(host, "manifests", obj)
        headers = {"Content-Type": desc.media_type}
        async with await session.request("PUT", host, url, headers=headers, body=body) as resp:
            if resp.status not in (200, 201, 202, 204):
                raise await status_error(resp, f"{session.ref.name}@{desc.digest}")
            answered = resp.headers.get("docker-content-digest")
            if answered and answered != desc.digest:
                raise errdefs.FailedPrecondition(
                    f"{session.ref.name}: the registry stored the manifest as {answered},"
                    f" expected {desc.digest}"
                )
        return "uploaded"

    async def _push_blob(
        self,
        desc: DescriptorLike,
        data: PushData,
        source_repository: str | None,
        chunk_size: int | None,
    ) -> PushResult:
        session = self._session
        host = self._push_host()
        what = f"{session.ref.name}@{desc.digest}"
        query: list[tuple[str, str]] = []
        extra_scopes: list[str] = []
        if source_repository and source_repository != session.repository:
            query = [("mount", desc.digest), ("from", source_repository)]
            extra_scopes = [f"repository:{source_repository}:pull"]
        url = session.url(host, "blobs", "uploads", "") + ("?" + urlencode(query) if query else "")
        async with await session.request("POST", host, url, extra_scopes=extra_scopes) as response:
            if response.status == 201 and query:
                return "mounted"
            if response.status != 202:
                raise await status_error(response, what)
            location = response.headers.get("location")
        if not location:
            raise errdefs.Unknown(f"{what}: the registry started an upload without a Location")
        upload = _http.URL.parse(host.base_url).join(location)
        if chunk_size is not None and chunk_size > 0 and desc.size > chunk_size:
            upload = await self._patch_chunks(desc, data, upload, chunk_size, extra_scopes)
            body: _http.RequestBody | None = None
            headers = {}
        else:
            body = data if isinstance(data, bytes) else _checked(desc, data())
            if isinstance(body, bytes):
                _verify(desc, body)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(desc.size),
            }
        target = _with_query(upload, [("digest", desc.digest)])
        # The same scopes as the POST: the token it got is the one cached, and
        # a streamed body cannot be sent twice to answer a fresh challenge.
        async with await session.request(
            "PUT", host, target, headers=headers, body=body, extra_scopes=extra_scopes
        ) as resp:
            if resp.status not in (201, 204):
                raise await status_error(resp, what)
        return "uploaded"

    async def _patch_chunks(
        self,
        desc: DescriptorLike,
        data: PushData,
        upload: _http.URL,
        chunk_size: int,
        extra_scopes: Sequence[str],
    ) -> _http.URL:
        session = self._session
        host = self._push_host()
        what = f"{session.ref.name}@{desc.digest}"
        hasher = _hasher(desc.digest)
        offset = 0
        async for piece in _rechunk(data, chunk_size):
            if offset + len(piece) > desc.size:
                raise errdefs.FailedPrecondition(
                    f"{desc.digest}: the data to push is more than the expected {desc.size} bytes"
                )
            hasher.update(piece)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            }
            async with await session.request(
                "PATCH", host, upload, headers=headers, body=piece, extra_scopes=extra_scopes
            ) as resp:
                if resp.status != 202:
                    raise await status_error(resp, what)
                location = resp.headers.get("location")
            offset += len(piece)
            if location:
                upload = upload.join(location)
        _check_end(desc, offset, hasher)
        return upload


async def _collect(stream: AsyncIterable[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    async for piece in stream:
        total += len(piece)
        if total > limit:
            raise errdefs.ResourceExhausted(f"more than {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


async def _rechunk(data: PushData, size: int) -> AsyncIterator[bytes]:
    """``data`` in pieces of exactly ``size`` bytes (the last may be shorter)."""
    if isinstance(data, bytes):
        for i in range(0, len(data), size):
            yield data[i : i + size]
        return
    pending = bytearray()
    async for piece in data():
        pending += piece
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


async def _checked(desc: DescriptorLike, stream: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``stream``, refused if it is longer than the descriptor or not its digest.

    The refusal of a bad end comes after the last byte went out: the request
    then fails and the registry, which checks the digest too, commits nothing.
    """
    hasher = _hasher(desc.digest)
    total = 0
    async for piece in stream:
        total += len(piece)
        if total > desc.size:
            raise errdefs.FailedPrecondition(
                f"{desc.digest}: the data to push is more than the expected {desc.size} bytes"
            )
        hasher.update(piece)
        yield piece
    _check_end(desc, total, hasher)


def _check_end(desc: DescriptorLike, size: int, hasher: hashlib._Hash) -> None:
    if size != desc.size:
        raise errdefs.FailedPrecondition(
            f"{desc.digest}: failed size validation: {size} != {desc.size}"
        )
    actual = f"{desc.digest.partition(':')[0]}:{hasher.hexdigest()}"
    if actual != desc.digest:
        raise errdefs.FailedPrecondition(
            f"unexpected commit digest {actual}, expected {desc.digest}"
        )


def _verify(desc: DescriptorLike, body: bytes) -> None:
    hasher = _hasher(desc.digest)
    hasher.update(body)
    _check_end(desc, len(body), hasher)


def _with_query(url: _http.URL, query: Sequence[tuple[str, str]]) -> _http.URL:
    sep = "&" if "?" in url.target else "?"
    return _http.URL(url.scheme, url.host, url.port, url.target + sep + urlencode(query))
