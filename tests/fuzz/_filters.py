"""Strategies for containerd's filter language, shared by the parser fuzz and the
daemon fuzz (every ``List`` request and events subscription takes filters).

:func:`selectors` draws selectors as data (field path, operator, value)
together with their rendering as a filter string, so a test can check what
the parser made of the string against what was meant.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = [
    "EVIL",
    "FIELDS",
    "Selector",
    "filter_strings",
    "filter_texts",
    "quote",
    "regexes",
    "selectors",
]

#: Field names the daemon's stores and events know, and a few they do not.
FIELDS = [
    "name",
    "id",
    "image",
    "topic",
    "namespace",
    "labels",
    "runtime",
    "target",
    "digest",
    "size",
    "kind",
    "parent",
    "type",
    "mediatype",
    "event",
    "nope",
]
LABEL_KEYS = ["a", "b", "a.b", "x y", "", "containerd.io/gc.root", "com.example.foo"]


def quote(text: str) -> str:
    """``text`` as a double-quoted string of the filter language (Go's syntax)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_PLAIN_FIELD = set(string.ascii_letters + string.digits + "_")
_PLAIN_VALUE = set(string.ascii_letters + string.digits + "_-./:@")


def _field(name: str) -> str:
    return name if name and set(name) <= _PLAIN_FIELD else quote(name)


# -- regular expressions that Python's re and RE2 read alike ------------------------------

_ATOMS = st.sampled_from(["a", "b", "c", "0", "é", ".", "[ab]", "[^a]", "\\.", "\\d", "\\w", "x"])
#: Groups that make a backtracking engine explore exponentially many ways to
#: fail on a long run of "a"s (RE2 never backtracks).
EVIL = ["(?:a+)+", "(?:a|a)*", "(?:a*)*", "(?:a|aa)+", "(?:\\w+\\w?)*", "(?:.*a){3}"]
_QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{1,3}", "{2}", "*?", "+?"])


@st.composite
def regexes(draw: st.DrawFn, depth: int = 2, *, anchors: bool = True) -> str:
    """A regular expression in the common subset of Python's and Go's syntax.

    Nested quantifiers included: they are what makes a backtracking engine
    take exponential time, which RE2 never does.
    """
    branches = []
    for _ in range(draw(st.integers(1, 2))):
        parts = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.integers(0, 9))
            if kind == 0:
                parts.append(draw(st.sampled_from(EVIL)))  # quantified already
                continue
            if depth > 0 and kind < 3:
                atom = "(?:" + draw(regexes(depth - 1, anchors=False)) + ")"
            else:
                atom = draw(_ATOMS)
            parts.append(atom + draw(_QUANTIFIERS))
        branches.append("".join(parts))
    anchored = draw(st.sampled_from(["{}", "^{}", "{}$", "^{}$"])) if anchors else "{}"
    return anchored.format("|".join(branches))


# -- selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """One selector as meant: ``path`` compared by ``op`` with ``value``."""

    path: tuple[str, ...]
    op: str  # "", "==", "!=", "~="
    value: str
    text: str  # how it was written


_VALUES = st.one_of(
    st.sampled_from(["", "web", "a", "é", "a,b", 'qu"ote', "back\\slash", "x y", "\t", "1"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
)


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    head = draw(st.sampled_from(FIELDS))
    if head == "labels" and draw(st.integers(0, 4)):
        key = draw(st.sampled_from(LABEL_KEYS))
        # A dotted key may be written as one quoted component or as several.
        rest = key.split(".") if "." in key and draw(st.booleans()) else [key]
        path = ("labels", *rest)
    else:
        path = (head,)
    op = draw(st.sampled_from(["", "==", "!=", "~="]))
    if op == "~=":
        value = draw(regexes())
        written = quote(value)
        if "/" not in value and "\\" not in value and draw(st.booleans()):
            written = "/" + value + "/"
    elif op:
        value = draw(_VALUES)
        # A bare value may not start with a quote ("/") or a separator (".").
        plain = value and set(value) <= _PLAIN_VALUE and value[0] not in "./"
        written = value if plain and draw(st.booleans()) else quote(value)
    else:
        value = written = ""
    text = ".".join(_field(p) for p in path) + op + written
    return Selector(path, op, value, text)


#: Filter strings as clients write them: selectors joined by ",".
filter_strings = st.lists(selectors(), min_size=1, max_size=3).map(
    lambda sels: ",".join(s.text for s in sels)
)

_SYNTAX = [*list("abcxyz019_.,=\"~!|/\\ \t\n'-*+?()[]{}^$@:é"), "labels", "name", "==", "~="]

#: Anything at all, leaning on the language's own characters.
filter_texts = st.one_of(
    st.lists(st.sampled_from(_SYNTAX), max_size=30).map("".join),
    st.text(max_size=40),
    filter_strings,
    # A valid filter with one character changed, dropped or added.
    st.tuples(filter_strings, st.integers(0, 200), st.sampled_from([*_SYNTAX, ""])).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) + 1 :]
    ),
)
