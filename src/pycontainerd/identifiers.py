"""Validation of identifiers: namespaces' objects, container ids, lease ids, snapshot keys.

An identifier ends up as a path component, a SQL key and a string another
containerd client will send back to us, so the rules are containerd's own and
deliberately narrow: ASCII letters and digits in runs, joined by single
``.``, ``_`` or ``-`` separators, at most 76 bytes.  Anything that passes is
safe as a file name (no ``/``, no leading ``.``, no ``..``).

Validate at the edge, before the value touches a path or a query.
"""

from __future__ import annotations

import re

from pycontainerd import errdefs

__all__ = ["MAX_LENGTH", "PATTERN", "validate"]

#: Longest identifier accepted, in bytes (containerd measures Go string length).
MAX_LENGTH = 76

_ALNUM = "[A-Za-z0-9]+"
_SEPARATORS = "[._-]"

#: The anchored pattern, spelled as containerd prints it in its error message.
PATTERN = f"^{_ALNUM}(?:{_SEPARATORS}(?:{_ALNUM}))*$"

# fullmatch, not match: Python's ``$`` would also accept a trailing newline.
_IDENTIFIER_RE = re.compile(f"{_ALNUM}(?:{_SEPARATORS}(?:{_ALNUM}))*")


def validate(s: str) -> None:
    """Raise ``InvalidArgument`` unless ``s`` is a valid containerd identifier.

    The checks run in containerd's order (empty, too long, pattern) so that a
    client sees the same message for the same bad input from either daemon.
    """
    if not s:
        raise errdefs.InvalidArgument("identifier must not be empty")
    if len(s.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise errdefs.InvalidArgument(
            f"identifier {_go_quote(s)} greater than maximum length ({MAX_LENGTH} characters)"
        )
    if _IDENTIFIER_RE.fullmatch(s) is None:
        raise errdefs.InvalidArgument(f"identifier {_go_quote(s)} must match {PATTERN}")


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _go_quote(s: str) -> str:
    """Quote ``s`` the way Go's ``%q`` does, so messages read like containerd's.

    Printable characters stay as they are; the rest become Go escapes.
    """
    out = ['"']
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            if cp < 0x80:
                out.append(f"\\x{cp:02x}")
            elif cp <= 0xFFFF:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)
