"""Registry auth: WWW-Authenticate parsing, the Bearer token flow (anonymous
and with credentials, ``token`` or ``access_token``, cached per scope until
it expires), and Basic."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycontainerd import errdefs
from pycontainerd.remotes import Resolver, _http, static_credentials
from pycontainerd.remotes._errors import parse_errors
from pycontainerd.remotes.auth import Authorizer, Challenge, parse_challenges
from tests.unit._http_server import Reply, Request, serve

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await aw

    return asyncio.run(wrapped())


def test_parse_bearer_and_basic_challenges() -> None:
    value = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:library/busybox:pull,push", Basic realm="x y"'
    )
    assert parse_challenges([value]) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:library/busybox:pull,push",
            },
        ),
        Challenge("basic", {"realm": "x y"}),
    ]
    assert parse_challenges(['Basic realm="a\\"b"', "Bearer realm=tok , error=invalid_token"]) == [
        Challenge("basic", {"realm": 'a"b'}),
        Challenge("bearer", {"realm": "tok", "error": "invalid_token"}),
    ]
    assert parse_challenges(["", ",,", "Negotiate"]) == [Challenge("negotiate", {})]


def _basic_user(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Basic "):
        return None
    return base64.b64decode(auth[6:]).decode()


class TokenRegistry:
    """A registry that wants a Bearer token from a token server on the same port."""

    def __init__(self, users: dict[str, str], key: str = "token", expires_in: int = 300):
        self.users = users
        self.key = key
        self.expires_in = expires_in
        self.issued = 0
        self.url = ""

    def __call__(self, request: Request) -> Reply:
        if request.path == "/token":
            query = parse_qs(request.query)
            who = _basic_user(request)
            if who is not None and who not in (f"{u}:{p}" for u, p in self.users.items()):
                return Reply(401, body=b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}')
            self.issued += 1
            token = f"{who or 'anonymous'}|{' '.join(query['scope'])}|{self.issued}"
            body = {self.key: token, "expires_in": self.expires_in}
            return Reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())
        auth = request.headers.get("authorization", "")
        repo = request.path.split("/")[2]
        if not auth.startswith("Bearer ") or auth.startswith("Bearer anonymous"):
            challenge = (
                f'Bearer realm="{self.url}/token",service="fake",scope="repository:{repo}:pull"'
            )
            return Reply(401, {"WWW-Authenticate": challenge}, b'{"errors":[]}')
        return Reply(200, {"Docker-Content-Digest": "x"}, b"ok")


def test_credentialed_token_flow_caches_per_scope() -> None:
    registry = TokenRegistry({"me": "pw"})

    async def main() -> None:
        async with serve(registry) as server:
            registry.url = server.url
            async with Resolver(
                plain_http=True, credentials=static_credentials("me", "pw")
            ) as resolver:
                session_a = resolver.fetcher(f"{server.host}/a")._session
                for _ in range(3):
                    url = session_a.url(session_a.hosts[0], "blobs", "sha256:x")
                    async with await session_a.request("GET", session_a.hosts[0], url) as r:
                        assert r.status == 200
                assert registry.issued == 1
                token_request = next(r for r in server.requests if r.path == "/token")
                assert "service=fake" in token_request.query
                assert "scope=repository%3Aa%3Apull" in token_request.query
                assert _basic_user(token_request) == "me:pw"
                # Another repository is another scope: a token of its own.
                session_b = resolver.fetcher(f"{server.host}/b")._session
                url = session_b.url(session_b.hosts[0], "blobs", "sha256:x")
                async with await session_b.request("GET", session_b.hosts[0], url) as r:
                    assert r.status == 200
                assert registry.issued == 2

    run(main())


def test_access_token_is_accepted_and_expired_tokens_are_fetched_again() -> None:
    registry = TokenRegistry({"me": "pw"}, key="access_token", expires_in=1)

    async def main() -> None:
        async with serve(registry) as server, _http.HttpClient() as client:
            registry.url = server.url
            now = [0.0]
            auth = Authorizer(client, static_credentials("me", "pw"), clock=lambda: now[0])
            challenge = [Challenge("bearer", {"realm": f"{server.url}/token", "service": "s"})]
            value = await auth.answer("h", challenge, ["repository:x:pull"])
            assert value.startswith("Bearer me:pw|repository:x:pull|1")
            # expires_in 1 is within the margin: never used up front.
            assert auth.authorization("h", ["repository:x:pull"]) is None
            registry.expires_in = 600
            await auth.answer("h", challenge, ["repository:x:pull"])
            assert (
                auth.authorization("h", ["repository:x:pull"]) == "Bearer me:pw|repository:x:pull|2"
            )
            now[0] = 601
            assert auth.authorization("h", ["repository:x:pull"]) is None

    run(main())


def test_anonymous_token_flow_and_refusals() -> None:
    registry = TokenRegistry({"me": "pw"})

    async def main() -> None:
        async with serve(registry) as server:
            registry.url = server.url
            # The anonymous token is not enough for this registry: refused clearly.
            async with Resolver(plain_http=True) as resolver:
                with pytest.raises(errdefs.PermissionDenied, match="authorization"):
                    await resolver.resolve(f"{server.host}/a:v1")
            token_requests = [r for r in server.requests if r.path == "/token"]
            assert token_requests and _basic_user(token_requests[0]) is None
            # Wrong credentials: the token server's refusal.
            async with Resolver(
                plain_http=True, credentials=static_credentials("me", "wrong")
            ) as resolver:
                with pytest.raises(errdefs.PermissionDenied, match="token server refused"):
                    await resolver.resolve(f"{server.host}/a:v1")

    run(main())


def test_basic_auth() -> None:
    def handler(request: Request) -> Reply:
        if _basic_user(request) != "u:p":
            return Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return Reply(200, {"Docker-Content-Digest": "sha256:" + "a" * 64})

    async def main() -> None:
        async with serve(handler) as server:
            async with Resolver(plain_http=True) as resolver:
                with pytest.raises(errdefs.PermissionDenied, match="none was given"):
                    await resolver.resolve(f"{server.host}/a:v1")
            async with Resolver(plain_http=True, credentials=static_credentials("u", "x")) as r:
                with pytest.raises(errdefs.PermissionDenied, match="authorization"):
                    await r.resolve(f"{server.host}/a:v1")
            asked: list[str] = []

            def creds(host: str) -> tuple[str, str]:
                asked.append(host)
                return ("u", "p")

            async with Resolver(plain_http=True, credentials=creds) as r:
                fetcher = r.fetcher(f"{server.host}/a")
                session = fetcher._session
                url = session.url(session.hosts[0], "blobs", "sha256:x")
                for _ in range(2):
                    async with await session.request("GET", session.hosts[0], url) as response:
                        assert response.status == 200
            assert asked == [server.host]
            # After the first challenge, credentials go up front.
            assert server.requests[-1].headers["authorization"].startswith("Basic ")

    run(main())


def test_unknown_scheme_is_refused() -> None:
    async def main() -> None:
        async with _http.HttpClient() as client:
            auth = Authorizer(client)
            with pytest.raises(errdefs.PermissionDenied, match="negotiate"):
                await auth.answer("h", [Challenge("negotiate")], [])

    run(main())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=3))
def test_challenge_parsing_never_fails(values: list[str]) -> None:
    for challenge in parse_challenges(values):
        assert challenge.scheme and challenge.scheme == challenge.scheme.lower()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_error_body_parsing_never_fails(body: bytes) -> None:
    parse_errors(body)
    parse_errors(b'{"errors":' + body + b"}")


def test_an_identity_token_is_posted_as_a_refresh_token_grant() -> None:
    def handler(request: Request) -> Reply:
        if request.path == "/token":
            form = parse_qs(request.body.decode())
            if request.method != "POST" or form.get("refresh_token") != ["idtoken"]:
                return Reply(401)
            assert form["grant_type"] == ["refresh_token"]
            assert form["service"] == ["svc"] and form["scope"] == ["repository:x:pull"]
            return Reply(200, body=b'{"access_token": "from-refresh", "expires_in": 120}')
        return Reply(404)

    async def main() -> None:
        async with serve(handler) as server, _http.HttpClient() as client:
            auth = Authorizer(client, static_credentials("", "idtoken"))
            challenge = [Challenge("bearer", {"realm": f"{server.url}/token", "service": "svc"})]
            assert await auth.answer("h", challenge, ["repository:x:pull"]) == "Bearer from-refresh"
            assert server.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"

    run(main())


def test_a_token_answer_that_is_not_an_object_is_an_error() -> None:
    async def main() -> None:
        async with serve(lambda r: Reply(200, body=b"[1, 2]")) as server, _http.HttpClient() as c:
            auth = Authorizer(c)
            challenge = [Challenge("bearer", {"realm": f"{server.url}/token"})]
            with pytest.raises(errdefs.Unknown, match="not a JSON object"):
                await auth.answer("h", challenge, [])

    run(main())
