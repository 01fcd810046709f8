"""Log URIs: where a shim sends a task's output instead of FIFOs.

containerd's shims read a task's ``stdout``/``stderr`` as URLs: a plain
path (or ``fifo://``) is a FIFO the client reads, ``file:///abs/path`` a
file the shim appends both streams to, ``binary:///abs/path?k=v`` a logging
program the shim starts with the streams on its fds 3 and 4.  A client
that wants one of the last two puts the same URI in both fields (cio's
``LogURI``, ``LogFile``, ``BinaryIO``); this module builds and checks them
as Go's ``LogURIGenerator`` and ``url.URL.String`` write them.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from pycontainerd import errdefs

__all__ = ["SCHEMES", "LogURI", "log_uri", "parse_log_uri"]

#: The schemes containerd's runc shims accept for a task's output.
SCHEMES = ("fifo", "file", "binary")

# Go's url.PathEscape-for-paths keeps these as they are (encodePath mode).
_PATH_SAFE = "/$&+,:;=@!'()*"


@dataclass(frozen=True, slots=True)
class LogURI:
    """A parsed log URI: its scheme, absolute path and query arguments."""

    scheme: str
    path: str
    args: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        # As url.URL{Scheme, Path, RawQuery}.String(): "scheme://" + path,
        # three slashes for an absolute path, query keys sorted.
        query = urllib.parse.urlencode(sorted(self.args.items()))
        text = f"{self.scheme}://{urllib.parse.quote(self.path, safe=_PATH_SAFE)}"
        return f"{text}?{query}" if query else text


def log_uri(
    scheme: str, path: str | os.PathLike[str], args: Mapping[str, str] | None = None
) -> str:
    """A log URI for ``path``, as containerd's ``LogURIGenerator`` makes it.

    The path must be absolute: the shim resolves it in its own working
    directory, not the client's.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise errdefs.InvalidArgument(f"{errdefs.q(text)} must be absolute")
    if scheme not in SCHEMES:
        raise errdefs.InvalidArgument(f"unknown log uri scheme {errdefs.q(scheme)}")
    return str(LogURI(scheme, text, dict(args or {})))


def parse_log_uri(text: str) -> LogURI:
    """Parse and check a log URI the way a runc shim reads one.

    A bare absolute path is a FIFO, as the shims take an empty scheme; a
    ``file`` or ``binary`` URI needs an absolute path, since a host part
    (``file://relative``) would be silently dropped by the shim.
    """
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme or "fifo"
    if scheme not in SCHEMES:
        raise errdefs.InvalidArgument(f"unknown STDIO scheme {scheme}")
    if parts.netloc:
        raise errdefs.InvalidArgument(
            f"log uri {errdefs.q(text)}: the path must be absolute (three slashes: {scheme}:///path)"
        )
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/"):
        raise errdefs.InvalidArgument(f"log uri {errdefs.q(text)}: the path must be absolute")
    # Go's url.Values.Get: the first value of a repeated key.
    args: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        args.setdefault(key, value)
    return LogURI(scheme, path, args)
