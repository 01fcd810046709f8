"""The registry HTTP client: bodies (length, chunked, to close), keep-alive,
redirects and what they do to Authorization, and its bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from pycontainerd import errdefs
from pycontainerd.remotes import _http
from tests.unit._http_server import Reply, Request, serve

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


BODY = bytes(range(256)) * 4096  # 1 MiB


async def _get(url: str, **kwargs: object) -> tuple[_http.Response, bytes]:
    async with _http.HttpClient() as client:
        response = await client.request("GET", url, **kwargs)  # type: ignore[arg-type]
        async with response:
            return response, await response.read(1 << 24)


def test_content_length_body_is_read_whole_and_the_connection_is_reused() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=BODY)) as server, _http.HttpClient() as client:
            for _ in range(3):
                async with await client.request("GET", server.url + "/blob") as response:
                    assert response.status == 200
                    assert await response.read(len(BODY)) == BODY
            assert len(server.connections) == 1
            assert server.requests[0].headers["host"] == server.host

    run(main())


def test_chunked_body_is_decoded_with_extensions_and_trailers() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=BODY, chunked=True)) as server:
            _, body = await _get(server.url + "/x")
            assert body == BODY

    run(main())


def test_body_to_the_end_of_the_connection() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"

    async def main() -> None:
        async with serve(lambda r: Reply(raw=raw)) as server:
            _, body = await _get(server.url)
            assert body == b"all of it"

    run(main())


def test_a_body_cut_short_is_connection_lost() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=BODY, close_after=1000)) as server:
            with pytest.raises(_http.ConnectionLost, match="unread"):
                await _get(server.url)

    run(main())


def test_read_refuses_a_body_over_its_cap() -> None:
    async def main() -> None:
        for chunked in (False, True):
            async with (
                serve(lambda r, c=chunked: Reply(body=BODY, chunked=c)) as server,
                _http.HttpClient() as client,
            ):
                response = await client.request("GET", server.url)
                async with response:
                    with pytest.raises(errdefs.ResourceExhausted, match="more than the 1000"):
                        await response.read(1000)

    run(main())


def test_an_oversized_header_block_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (_http.MAX_HEADER_BYTES + 10) + b"\r\n\r\n"

    async def main() -> None:
        async with serve(lambda r: Reply(raw=raw)) as server:
            with pytest.raises(errdefs.ResourceExhausted, match="header block"):
                await _get(server.url)

    run(main())


def test_too_many_header_fields_are_refused() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(_http.MAX_HEADERS + 1))
    raw = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"

    async def main() -> None:
        async with serve(lambda r: Reply(raw=raw)) as server:
            with pytest.raises(errdefs.ResourceExhausted, match="header fields"):
                await _get(server.url)

    run(main())


def test_a_malformed_status_line_is_an_error() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(raw=b"SSH-2.0-OpenSSH\r\n\r\n")) as server:
            with pytest.raises(errdefs.Unknown, match="malformed status line"):
                await _get(server.url)

    run(main())


def test_redirect_to_another_host_drops_authorization() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=b"stored")) as storage:

            def registry(request: Request) -> Reply:
                if request.path == "/same":
                    return Reply(307, {"Location": "/other"})
                if request.path == "/other":
                    return Reply(302, {"Location": storage.url + "/blob?sig=1"})
                return Reply(404)

            async with serve(registry) as server:
                headers = {"Authorization": "Bearer secret"}
                response, body = await _get(server.url + "/same", headers=headers)
                assert body == b"stored"
                assert str(response.url) == storage.url + "/blob?sig=1"
                # Kept on the same host, dropped on the way to the storage.
                assert [r.headers.get("authorization") for r in server.requests] == [
                    "Bearer secret",
                    "Bearer secret",
                ]
                assert storage.requests[0].headers.get("authorization") is None
                assert storage.requests[0].target == "/blob?sig=1"

    run(main())


def test_redirects_are_limited() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(302, {"Location": "/again"})) as server:
            with pytest.raises(errdefs.Unavailable, match="redirects"):
                await _get(server.url)
            assert len(server.requests) == _http.MAX_REDIRECTS + 1

    run(main())


def test_a_silent_server_times_out() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read(1 << 16)
                await asyncio.sleep(5)
            finally:
                writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with _http.HttpClient(read_timeout=0.2) as client:
                with pytest.raises(errdefs.DeadlineExceeded, match="no data"):
                    await client.request("GET", f"http://127.0.0.1:{port}/")
        finally:
            server.close()

    run(main())


def test_a_refused_connection_is_connection_lost() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply()) as server:
            url = server.url
        with pytest.raises(_http.ConnectionLost, match="connecting"):
            await _get(url)

    run(main())


def test_a_pooled_connection_closed_by_the_server_is_replaced() -> None:
    async def main() -> None:
        replies = iter([Reply(body=b"one", headers={}), Reply(body=b"two")])

        def handler(request: Request) -> Reply:
            return next(replies)

        async with serve(handler) as server, _http.HttpClient() as client:
            async with await client.request("GET", server.url) as response:
                assert await response.read(10) == b"one"
            # The server forgets the idle connection.
            for conn in client._idle.values():
                for c in conn:
                    assert c.transport is not None
                    c.transport.abort()
            await asyncio.sleep(0.01)
            async with await client.request("GET", server.url) as response:
                assert await response.read(10) == b"two"

    run(main())


def test_streamed_request_body_is_sent_chunked() -> None:
    async def main() -> None:
        async def pieces():  # type: ignore[no-untyped-def]
            yield b"abc"
            yield b"def"

        async with serve(lambda r: Reply(201)) as server, _http.HttpClient() as client:
            async with await client.request("PUT", server.url, body=pieces()) as response:
                assert response.status == 201
            assert server.requests[0].body == b"abcdef"
            assert server.requests[0].headers["transfer-encoding"] == "chunked"

    run(main())


def test_urls() -> None:
    url = _http.URL.parse("https://r.example:443/v2/x?a=1")
    assert (url.netloc, url.target) == ("r.example", "/v2/x?a=1")
    assert str(url.join("/v2/y")) == "https://r.example/v2/y"
    assert str(url.join("http://s:81/z")) == "http://s:81/z"
    with pytest.raises(errdefs.InvalidArgument):
        _http.URL.parse("ftp://x/")


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"zz\r\n", errdefs.Unknown, "invalid chunk size"),
        (b"a" * (_http.MAX_LINE + 10), errdefs.ResourceExhausted, "chunk size line"),
        (b"3\r\nabcX\r\n", errdefs.Unknown, "data after a chunk"),
        (b"5\r\nab", _http.ConnectionLost, "middle of a chunk"),
    ],
)
def test_broken_chunked_bodies_are_errors(raw: bytes, error: type[Exception], message: str) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def main() -> None:
        async with serve(lambda r: Reply(raw=head + raw)) as server:
            with pytest.raises(error, match=message):
                await _get(server.url)

    run(main())


def test_a_slow_trickle_is_not_a_timeout() -> None:
    async def main() -> None:
        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read(1 << 16)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for _ in range(10):
                    writer.write(b"x" * 10)
                    await writer.drain()
                    await asyncio.sleep(0.05)
            finally:
                writer.close()

        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            # Each byte comes well within the timeout; the whole body does not.
            async with _http.HttpClient(read_timeout=0.2) as client:
                response = await client.request("GET", f"http://127.0.0.1:{port}/")
                async with response:
                    assert await response.read(1000) == b"x" * 100
        finally:
            server.close()

    run(main())


def test_plain_http_through_a_proxy_uses_the_absolute_form() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=b"proxied")) as proxy:
            client = _http.HttpClient(proxy=f"http://me:p%40ss@{proxy.host}")
            async with client:
                url = "http://registry.invalid:5000/v2/"
                async with await client.request("GET", url) as response:
                    assert await response.read(100) == b"proxied"
            request = proxy.requests[0]
            assert request.target == "http://registry.invalid:5000/v2/"
            assert request.headers["host"] == "registry.invalid:5000"
            assert request.headers["proxy-authorization"] == "Basic bWU6cEBzcw=="  # me:p@ss

    run(main())


def test_a_proxy_refusing_connect_is_a_clear_error() -> None:
    async def main() -> None:
        replies = {"407": Reply(407), "502": Reply(502)}
        for code, reply in replies.items():
            async with serve(lambda r, reply=reply: reply) as proxy:
                async with _http.HttpClient(proxy=proxy.url) as client:
                    error = errdefs.PermissionDenied if code == "407" else errdefs.Unavailable
                    with pytest.raises(error, match=f"CONNECT r.invalid:443 .* {code}"):
                        await client.request("GET", "https://r.invalid/v2/")
                assert proxy.requests[0].method == "CONNECT"

    run(main())


def test_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = _http.URL.parse
    assert _http.proxy_from_environment(url("https://r.example/")) is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("http_proxy", "http://plain.corp:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example, .corp.example,10.0.0.0/8,r2.example:5000")
    proxy = _http.proxy_from_environment(url("https://r.example/"))
    assert proxy is not None and proxy.url.netloc == "proxy.corp:3128"
    plain = _http.proxy_from_environment(url("http://r.example/"))
    assert plain is not None and plain.url.netloc == "plain.corp:8080"
    for bypassed in (
        "https://internal.example/",
        "https://a.internal.example/",
        "https://x.corp.example/",
        "https://10.1.2.3/",
        "https://r2.example:5000/",
        "https://127.0.0.1:5000/",
        "https://localhost/",
    ):
        assert _http.proxy_from_environment(url(bypassed)) is None, bypassed
    assert _http.proxy_from_environment(url("https://r2.example:5001/")) is not None
    monkeypatch.setenv("NO_PROXY", "*")
    assert _http.proxy_from_environment(url("https://r.example/")) is None
    with pytest.raises(errdefs.InvalidArgument, match="only http://"):
        _http.Proxy.parse("socks5://p:1080")


def test_dump_logs_heads_without_credentials_or_bodies(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        reply = Reply(body=b"the body", headers={"Www-Authenticate": 'Bearer realm="x"'})
        async with serve(lambda r: reply) as server, _http.HttpClient(dump=True) as client:
            headers = {"Authorization": "Bearer tok.en", "Proxy-Authorization": "Basic cHc="}
            async with await client.request(
                "POST", server.url + "/token", headers=headers, body=b"refresh_token=secret"
            ) as response:
                await response.read(100)

    with caplog.at_level("INFO", logger="pycontainerd.remotes.http"):
        run(main())
    request, answer = (r.getMessage() for r in caplog.records)
    assert request.startswith("POST /token HTTP/1.1\nHost: ")
    assert "\nAuthorization: Bearer <redacted>" in request
    assert "\nProxy-Authorization: Basic <redacted>" in request
    assert answer.startswith("HTTP/1.1 200 X\n")  # the test server's reason
    assert 'realm="x"' in answer
    logged = request + answer
    assert "tok.en" not in logged and "cHc=" not in logged and "secret" not in logged
    assert "the body" not in logged


def test_no_dump_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(body=b"x")) as server:
            await _get(server.url + "/x")

    with caplog.at_level("DEBUG", logger="pycontainerd.remotes.http"):
        run(main())
    assert [r for r in caplog.records if r.name == "pycontainerd.remotes.http"] == []
