"""Registry answers that are errors, turned into errdefs' classes.

A registry explains a failure in a JSON body (``{"errors": [{"code",
"message", "detail"}]}``, the distribution spec's format); that body is read
only up to :data:`MAX_ERROR_BODY` bytes, and only its codes and messages are
kept.  The mapping:

* 404, or a code ``MANIFEST_UNKNOWN`` / ``NAME_UNKNOWN`` / ``BLOB_UNKNOWN``
  → ``NotFound``;
* 401 and 403 → ``PermissionDenied`` (errdefs has no Unauthenticated; the
  message tells which);
* ``DIGEST_INVALID`` / ``SIZE_INVALID`` → ``FailedPrecondition``;
* 429 and 5xx → ``Unavailable``; anything else → ``Unknown``, with the status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pycontainerd import errdefs
from pycontainerd.remotes import _http

__all__ = ["MAX_ERROR_BODY", "RegistryError", "parse_errors", "status_error"]

#: Most bytes of an error body read to explain the error.
MAX_ERROR_BODY = 64 * 1024
#: Most error entries kept from one body.
_MAX_ENTRIES = 8
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_PRECONDITION_CODES = frozenset({"DIGEST_INVALID", "SIZE_INVALID", "MANIFEST_INVALID"})


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One entry of a registry's error body."""

    code: str
    message: str

    def __str__(self) -> str:
        text = self.code.lower().replace("_", " ")
        return f"{text}: {self.message}" if self.message else text


def parse_errors(body: bytes) -> list[RegistryError]:
    """The entries of an error body; [] when it is not the spec's JSON."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    entries = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries[:_MAX_ENTRIES]:
        if isinstance(entry, dict):
            code, message = entry.get("code"), entry.get("message")
            out.append(
                RegistryError(
                    code if isinstance(code, str) else "UNKNOWN",
                    message[:512] if isinstance(message, str) else "",
                )
            )
    return out


async def status_error(response: _http.Response, what: str) -> errdefs.ContainerdError:
    """The error a non-success ``response`` stands for; ``what`` names the object
    asked for (a reference, a digest).  Reads (and caps) the body, closes the
    response."""
    try:
        body = await response.read(MAX_ERROR_BODY)
    except errdefs.ContainerdError:
        body = b""
    finally:
        await response.aclose()
    return error_for(response.status, response.reason, response.method, response.url, body, what)


def error_for(
    status: int, reason: str, method: str, url: _http.URL, body: bytes, what: str
) -> errdefs.ContainerdError:
    entries = parse_errors(body)
    codes = {e.code for e in entries}
    detail = "; ".join(str(e) for e in entries)
    suffix = f": {detail}" if detail else ""
    if status == 404 or codes & _NOT_FOUND_CODES:
        return errdefs.NotFound(f"{what}: not found")
    if status == 401:
        return errdefs.PermissionDenied(
            f"{what}: access denied, the registry wants authorization"
            f" ({method} {url}: {status} {reason}){suffix}"
        )
    if status == 403:
        return errdefs.PermissionDenied(
            f"{what}: access forbidden ({method} {url}: {status} {reason}){suffix}"
        )
    message = f"{what}: unexpected status from {method} request to {url}: {status} {reason}{suffix}"
    if codes & _PRECONDITION_CODES:
        return errdefs.FailedPrecondition(message)
    if status == 429 or status >= 500:
        return errdefs.Unavailable(message)
    return errdefs.Unknown(message)
