"""Registry authentication: ``WWW-Authenticate`` challenges, Bearer tokens, Basic.

The flow is the Docker Registry token protocol as containerd's
``remotes/docker`` follows it: a request answered 401 carries challenges;
for ``Bearer`` we GET the challenge's ``realm`` with its ``service`` and the
``scope``\\ s we need (with Basic credentials when the credential callback
gives some, anonymously otherwise), take ``token`` or ``access_token`` from
the JSON answer, and send the request again with ``Authorization: Bearer``.
Credentials with no username carry an identity token, which goes to the
same realm as an OAuth2 ``refresh_token`` grant (a POSTed form) instead.
For ``Basic`` the credentials go on every request to that host.

Tokens are cached per (host, scopes) until ``expires_in`` (60 s when the
server says nothing, as the protocol specifies) runs out.  A token answer is
read into memory only up to :data:`MAX_TOKEN_RESPONSE` bytes.

Credentials come from a callback ``(host) -> (username, secret) | None``,
asked each time a challenge needs them; ``host`` is the ``host[:port]`` of
the endpoint that asked, as containerd passes it: ``registry-1.docker.io``
for Docker Hub, a mirror's own host for a mirror.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from pycontainerd import errdefs
from pycontainerd.remotes import _http
from pycontainerd.remotes._errors import status_error

__all__ = [
    "MAX_TOKEN_RESPONSE",
    "Authorizer",
    "Challenge",
    "Credentials",
    "parse_challenges",
    "static_credentials",
]

#: Largest token response read (JWTs with certificate chains run to a few KiB).
MAX_TOKEN_RESPONSE = 1 << 20
#: A token's lifetime when the server gives none (the token protocol's default).
DEFAULT_EXPIRES_IN = 60
#: A token this close to its expiry is fetched again rather than used.
_EXPIRY_MARGIN = 5.0

#: ``(host) -> (username, secret) | None``.
Credentials = Callable[[str], tuple[str, str] | None]


def static_credentials(username: str, secret: str) -> Credentials:
    """The same credentials for every host (ctr's ``--user user:pass``)."""
    return lambda host: (username, secret)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a scheme and its parameters."""

    scheme: str  # lower case: "bearer", "basic"
    params: Mapping[str, str] = field(default_factory=dict)


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(s) and s[i] not in ' \t,="':
        i += 1
    return s[start:i], i


def _quoted(s: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at ``s[i] == '"'``; backslash escapes one character."""
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Challenges of one or more ``WWW-Authenticate`` values (RFC 7235's grammar).

    A header may hold several challenges separated by commas, each a scheme
    followed by ``name=value`` or ``name="quoted value"`` parameters.
    Unparseable remains are skipped rather than failing the request.
    """
    challenges: list[Challenge] = []
    for value in values:
        i = 0
        scheme = ""
        params: dict[str, str] = {}
        while i < len(value):
            i = _skip_spaces(value, i)
            if i < len(value) and value[i] == ",":
                i += 1
                continue
            name, j = _token(value, i)
            if not name:
                i = j + 1
                continue
            k = _skip_spaces(value, j)
            if k < len(value) and value[k] == "=" and scheme:
                k = _skip_spaces(value, k + 1)
                if k < len(value) and value[k] == '"':
                    param, i = _quoted(value, k)
                else:
                    param, i = _token(value, k)
                params[name.lower()] = param
            else:
                if scheme:
                    challenges.append(Challenge(scheme, params))
                scheme, params, i = name.lower(), {}, j
        if scheme:
            challenges.append(Challenge(scheme, params))
    return challenges


def _basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")


class Authorizer:
    """Answers challenges and remembers the answers, for all hosts of a resolver."""

    def __init__(
        self,
        http: _http.HttpClient,
        credentials: Credentials | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic: dict[str, str] = {}
        self._bearer_hosts: set[str] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def authorization(self, host: str, scopes: Sequence[str]) -> str | None:
        """The ``Authorization`` value to send to ``host`` up front, if any is known."""
        basic = self._basic.get(host)
        if basic is not None:
            return basic
        if host not in self._bearer_hosts:
            return None
        cached = self._tokens.get((host, _scope_key(scopes)))
        if cached is not None and cached[1] - _EXPIRY_MARGIN > self._clock():
            return f"Bearer {cached[0]}"
        return None

    async def answer(
        self,
        host: str,
        challenges: Sequence[Challenge],
        scopes: Sequence[str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        refresh: bool = False,
    ) -> str:
        """The ``Authorization`` value that answers ``challenges``.

        Raises ``PermissionDenied`` when none can be answered (Basic with no
        credentials, an unknown scheme, a token server that refuses).
        """
        by_scheme = {c.scheme: c for c in challenges}
        bearer = by_scheme.get("bearer")
        if bearer is not None and bearer.params.get("realm"):
            wanted = list(scopes)
            extra = bearer.params.get("scope")
            if extra:
                wanted.extend(s for s in extra.split(" ") if s and s not in wanted)
            self._bearer_hosts.add(host)
            key = (host, _scope_key(scopes))
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                cached = self._tokens.get(key)
                if (
                    not refresh
                    and cached is not None
                    and cached[1] - _EXPIRY_MARGIN > self._clock()
                ):
                    return f"Bearer {cached[0]}"
                token, expires_in = await self._fetch_token(host, bearer, wanted, ssl_context)
                self._tokens[key] = (token, self._clock() + expires_in)
            return f"Bearer {token}"
        if "basic" in by_scheme:
            creds = self._credentials(host) if self._credentials is not None else None
            if creds is None:
                raise errdefs.PermissionDenied(
                    f"{host} requires a username and password (Basic auth), and none was given"
                )
            value = _basic(*creds)
            if refresh and self._basic.get(host) == value:
                raise errdefs.PermissionDenied(f"{host} refused the credentials given")
            self._basic[host] = value
            return value
        schemes = ", ".join(c.scheme for c in challenges) or "none"
        raise errdefs.PermissionDenied(
            f"{host} asks for authentication this client cannot answer (schemes: {schemes})"
        )

    async def _fetch_token(
        self,
        host: str,
        challenge: Challenge,
        scopes: Sequence[str],
        ssl_context: ssl.SSLContext | None,
    ) -> tuple[str, float]:
        realm = challenge.params["realm"]
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        query.extend(("scope", s) for s in scopes)
        url = _http.URL.parse(realm)
        headers = {"Accept": "application/json"}
        creds = self._credentials(host) if self._credentials is not None else None
        body: bytes | None = None
        if creds is not None and not creds[0]:
            # No username: the secret is an identity (refresh) token, which
            # only the OAuth2 form of the endpoint takes.
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds[1]),
                ("client_id", "pycontainerd"),
                ("scope", " ".join(scopes)),
            ]
            if challenge.params.get("service"):
                form.append(("service", challenge.params["service"]))
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            target = url.target + ("&" if "?" in url.target else "?") + urlencode(query)
            url = _http.URL(url.scheme, url.host, url.port, target)
            if creds is not None:
                headers["Authorization"] = _basic(*creds)
        method = "GET" if body is None else "POST"
        async with await self._http.request(
            method, url, headers=headers, body=body, ssl_context=ssl_context
        ) as response:
            if response.status in (401, 403):
                err = await status_error(response, f"token for {host}")
                anonymous = "anonymous " if creds is None else ""
                raise errdefs.PermissionDenied(
                    f"{host}: the token server refused the {anonymous}request: {err.message}"
                )
            if response.status != 200:
                raise await status_error(response, f"token for {host}")
            data = await response.read(MAX_TOKEN_RESPONSE)
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise errdefs.Unknown(f"{host}: the token server's answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise errdefs.Unknown(f"{host}: the token server's answer is not a JSON object")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise errdefs.Unknown(f"{host}: the token server's answer holds no token")
        expires_in = answer.get("expires_in")
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRES_IN
        return token, float(expires_in)


def _scope_key(scopes: Sequence[str]) -> str:
    return " ".join(sorted(set(scopes)))
