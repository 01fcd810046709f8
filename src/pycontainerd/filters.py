"""containerd's filter language: parse a filter string once, match it against many objects.

Every ``List`` call of containerd's API (containers, images, content, leases,
snapshots) and every events subscription takes filter strings, and ``ctr``,
``dockerd`` and CRI clients write them in containerd's syntax.  This module
accepts exactly what containerd 1.6 accepts, rejects what it rejects, and
reports parse errors in the same ``[before >|here|< after]`` shape.

Syntax, as a grammar::

    filters   := filter ("," filter)*          -- all must match
    filter    := fieldpath (operator value)?   -- no operator: field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+
    quoted    := '"' ... '"' with Go escapes; for "~=" also /.../ or |...|

Examples: ``topic==/tasks/exit``, ``namespace==default,topic~=/tasks/.*``,
``labels."com.example.foo"==bar``, ``image~=^docker.io/``, ``labels.foo``.
Several strings given to :func:`parse_all` are OR'ed; no strings at all
match everything.

Matching goes through an *adaptor*, containerd's idea: the filter never
looks inside objects, it asks ``field(path) -> (value, present)``.  An
adaptor is either a callable of that shape or an object with a ``field``
method.  :func:`adapt_mapping` and :func:`adapt_object` build one for dicts
and for dataclasses (with containerd's ``labels.<key>`` convention).

Regular expressions (``~=``) are Go's regexp in containerd, which is RE2
syntax; we compile them with RE2 itself (``google-re2``), with Go's
semantics: Perl classes and ``\\b`` in ASCII, ``\\pL`` and ``[[:alpha:]]``,
leftmost-first, UTF-8; ``\\C`` is refused as Go refuses it.  Matching takes
time linear in the text, so no pattern can backtrack.  Unlike containerd,
which compiles lazily and silently matches nothing on a bad pattern, we
compile at parse time and reject a bad pattern with ``InvalidArgument``:
the caller learns about the mistake.

Filters are client input, so each request is bounded, and a request over a
bound fails with ``InvalidArgument`` before anything is matched:

- :data:`MAX_FILTER_LENGTH`: 16 KiB of filter text, all strings together;
- :data:`MAX_SELECTORS`: 64 selectors, all strings together (each string
  counts at least once);
- :data:`REGEXP_MAX_MEM`: 1 MiB of RE2 memory per pattern (program and DFA
  cache), which caps the program at tens of thousands of instructions, so
  compiling takes milliseconds and matching a byte costs at most that many
  steps.  The ``re2`` module keeps its last 128 patterns compiled, so
  patterns pin at most 128 MiB however many requests send them.

What is left to the client is the product: records x selectors x bytes
matched.  Code on the event loop therefore uses :func:`parse_async` and
:func:`select`, which compile and match on a pool of four threads of
their own unless the work is trivially small, so filters never hold the
loop (RE2 releases the GIL while it matches).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import functools
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, cast

import re2

from pycontainerd import errdefs

__all__ = [
    "ALWAYS",
    "MAX_FILTER_LENGTH",
    "MAX_SELECTORS",
    "REGEXP_MAX_MEM",
    "Adaptor",
    "AdaptorLike",
    "AllOf",
    "Always",
    "AnyOf",
    "FieldFunc",
    "Filter",
    "Operator",
    "Pattern",
    "Selector",
    "adapt_mapping",
    "adapt_object",
    "compile_re2",
    "parse",
    "parse_all",
    "parse_async",
    "select",
]

#: Characters of filter text one request may send, all its strings together:
#: room for a selector on a label of containerd's largest size (4 KiB).
MAX_FILTER_LENGTH: Final = 16 * 1024

#: Selectors one request may send, all its strings together (each string
#: counts at least once, so many empty strings are bounded too).
MAX_SELECTORS: Final = 64

#: RE2's memory budget for one compiled pattern: its program and its DFA
#: cache.  It also caps the program's size, and with it both the time to
#: compile and the time per byte matched.
REGEXP_MAX_MEM: Final = 1 << 20


T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------
# Adaptors


FieldFunc = Callable[[Sequence[str]], tuple[str, bool]]
"""``field(path) -> (value, present)``: the function form of an adaptor."""


class Adaptor(Protocol):
    """An object that resolves field paths, as containerd's ``filters.Adaptor``.

    ``present`` is False when the object has no such field (or, following
    containerd, when a scalar field holds the empty string).
    """

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        """Return the string value at ``fieldpath`` and whether it is present."""
        ...


AdaptorLike = Adaptor | FieldFunc


def _field_func(adaptor: AdaptorLike) -> FieldFunc:
    method = getattr(adaptor, "field", None)
    return cast(FieldFunc, adaptor if method is None else method)


# --------------------------------------------------------------------------
# Filters


class Filter(ABC):
    """A parsed filter: immutable, thread-safe, cheap to match repeatedly."""

    __slots__ = ()

    def match(self, adaptor: AdaptorLike) -> bool:
        """Whether the object behind ``adaptor`` passes this filter."""
        return self._match(_field_func(adaptor))

    @abstractmethod
    def _match(self, field: FieldFunc) -> bool:
        """Match against an already-resolved field function (the hot path)."""

    @property
    @abstractmethod
    def selectors(self) -> tuple[Selector, ...]:
        """Every test this filter may run on one object: what a match costs."""


class Always(Filter):
    """Matches everything: the empty filter string and the empty filter list."""

    __slots__ = ()

    def _match(self, field: FieldFunc) -> bool:
        return True

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return ()

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS: Final = Always()


@dataclass(frozen=True, slots=True)
class AnyOf(Filter):
    """Matches when any member matches: the OR of several filter strings."""

    filters: tuple[Filter, ...]

    def _match(self, field: FieldFunc) -> bool:
        # A plain loop: any() over a generator costs a frame per call, and
        # this runs once per object per List.
        for f in self.filters:  # noqa: SIM110
            if f._match(field):
                return True
        return False

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return tuple(s for f in self.filters for s in f.selectors)


@dataclass(frozen=True, slots=True)
class AllOf(Filter):
    """Matches when every member matches: the comma-separated selectors of one string."""

    filters: tuple[Filter, ...]

    def _match(self, field: FieldFunc) -> bool:
        for f in self.filters:  # noqa: SIM110 - see AnyOf
            if not f._match(field):
                return False
        return True

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return tuple(s for f in self.filters for s in f.selectors)


class Operator(enum.Enum):
    """How a selector compares the field with its value."""

    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


@dataclass(frozen=True, slots=True)
class Selector(Filter):
    """One ``<fieldpath>[<operator><value>]`` test.

    For ``MATCHES`` the pattern is compiled once, at construction; a bad
    pattern raises ``InvalidArgument``.
    """

    fieldpath: tuple[str, ...]
    operator: Operator = Operator.PRESENT
    value: str = ""
    pattern: Pattern | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.operator is Operator.MATCHES and self.pattern is None:
            object.__setattr__(self, "pattern", compile_re2(self.value))

    def _match(self, field: FieldFunc) -> bool:
        value, present = field(self.fieldpath)
        op = self.operator
        if op is _EQUAL:
            return present and value == self.value
        if op is _NOT_EQUAL:
            # containerd compares even an absent field (as ""): "name!=x"
            # matches objects without a name.
            return value != self.value
        if op is _PRESENT:
            return present
        pattern = self.pattern
        # RE2 reads UTF-8; bytes a value was decoded from with
        # surrogateescape go back as the bytes they were, as Go would see them.
        return pattern is not None and pattern.search(value.encode(_UTF8, _AS_BYTES)) is not None

    @property
    def selectors(self) -> tuple[Selector, ...]:
        return (self,)


# Module globals are cheaper to reach than enum members on the hot path.
_EQUAL: Final = Operator.EQUAL
_NOT_EQUAL: Final = Operator.NOT_EQUAL
_PRESENT: Final = Operator.PRESENT
_UTF8: Final = "utf-8"
_AS_BYTES: Final = "surrogateescape"


# --------------------------------------------------------------------------
# Regular expressions: RE2, as Go's regexp


class Pattern(Protocol):
    """A compiled ``~=`` pattern: all a selector asks of it."""

    def search(self, text: bytes, /) -> object | None:
        """A match of the pattern anywhere in ``text``, or None."""
        ...


def _regexp_options() -> re2.Options:
    # The defaults are Go's regexp.Compile: Perl syntax (\d \w \s \b are
    # ASCII, \pL and [[:alpha:]] are there), leftmost-first, ^ and $ at the
    # ends of the text, UTF-8.  Captures never change whether a pattern
    # matches, and without them RE2 answers from its DFA alone.
    options = re2.Options()
    options.max_mem = REGEXP_MAX_MEM
    options.never_capture = True
    options.log_errors = False  # RE2 would print every bad pattern on stderr
    return options


_REGEXP_OPTIONS: Final = _regexp_options()


def _go_syntax_error(pattern: str) -> str | None:
    """What RE2 accepts and Go's regexp refuses: ``\\C``, any single byte."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "\\":
            i += 1
        elif pattern.startswith("\\Q", i):  # literal text up to \E
            end = pattern.find("\\E", i + 2)
            i = n if end < 0 else end + 2
        elif pattern.startswith("\\C", i):
            return "invalid escape sequence: \\C"
        else:
            i += 2
    return None


def compile_re2(pattern: str) -> Pattern:
    """Compile a ``~=`` pattern with RE2, as containerd's Go regexp reads it.

    Raises ``InvalidArgument`` when the pattern is not valid, not UTF-8, or
    compiles to a program larger than :data:`REGEXP_MAX_MEM` allows.
    """
    reason = _go_syntax_error(pattern)
    if reason is None:
        try:
            return cast(Pattern, re2.compile(pattern, _REGEXP_OPTIONS))
        except UnicodeEncodeError:
            # A pattern quoted with \x escapes may hold bytes that are not
            # UTF-8; Go's regexp refuses those too.
            reason = "invalid UTF-8"
        except re2.error as exc:
            message = exc.args[0] if exc.args else b""
            reason = message.decode(errors="replace") if isinstance(message, bytes) else message
    raise errdefs.InvalidArgument(f"invalid regular expression {pattern!r}: {reason}")


# --------------------------------------------------------------------------
# Scanner


class _Tok(enum.Enum):
    EOF = "EOF"
    QUOTED = "Quoted"
    VALUE = "Value"
    FIELD = "Field"
    SEPARATOR = "Separator"
    OPERATOR = "Operator"
    ILLEGAL = "Illegal"
    CHAR = "Char"  # any other single character, carried in the text


# Characters are str of length one; these two sentinels can never equal one.
_EOF: Final = "<eof>"
_ILLEGAL: Final = "<illegal>"

_QUOTES: Final = frozenset('"/|')
_SEPARATORS: Final = frozenset(",.")
_OPERATOR_CHARS: Final = frozenset("=!~")
_FIELD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SIMPLE_ESCAPES: Final = frozenset("abfnrtv\\")
_OCTAL: Final = frozenset("01234567")
# Python counts the ASCII information separators as space; Go does not.
_NOT_GO_SPACE: Final = frozenset("\x1c\x1d\x1e\x1f")


def _is_space(ch: str) -> bool:
    return len(ch) == 1 and ch.isspace() and ch not in _NOT_GO_SPACE


def _is_value_char(ch: str) -> bool:
    """Go's letter/digit/number/graphic/punct test, minus "," and space."""
    if len(ch) != 1 or ch == ",":
        return False
    if "!" <= ch <= "~":
        return True
    if ch.isspace():
        return False
    return unicodedata.category(ch)[0] in "LMNPS"


def _digit_value(ch: str) -> int:
    if len(ch) == 1:
        if "0" <= ch <= "9":
            return ord(ch) - ord("0")
        if "a" <= ch <= "f":
            return ord(ch) - ord("a") + 10
        if "A" <= ch <= "F":
            return ord(ch) - ord("A") + 10
    return 16  # above every base we use


class _Scanner:
    """Tokenizer with containerd's quirks, positions counted in characters.

    ``pos`` is where the current character starts, ``ppos`` where the next
    one does; ``value`` is set after an operator, so that the next run of
    characters is read as a value (which may contain ``.``, ``/``, ``-``...).
    """

    __slots__ = ("err", "input", "pos", "ppos", "value")

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.ppos = 0
        self.value = False
        self.err = ""

    def _error(self, msg: str) -> None:
        if not self.err:
            self.err = msg

    def next(self) -> str:
        n = len(self.input)
        if self.pos >= n:
            return _EOF
        self.pos = self.ppos
        if self.ppos >= n:
            return _EOF
        ch = self.input[self.ppos]
        self.ppos += 1
        if ch == "\x00":
            self._error("unexpected null")
            return _ILLEGAL
        return ch

    def peek(self) -> str:
        pos, ppos = self.pos, self.ppos
        ch = self.next()
        self.pos, self.ppos = pos, ppos
        return ch

    def scan(self) -> tuple[int, _Tok, str]:
        ch = self.next()
        pos = self.pos
        while True:
            if ch == _EOF:
                return self.pos, _Tok.EOF, ""
            if ch == _ILLEGAL:
                return self.pos, _Tok.ILLEGAL, ""
            if ch in _QUOTES:
                ok = self._scan_quoted(ch)
                return pos, _Tok.QUOTED if ok else _Tok.ILLEGAL, self.input[pos : self.ppos]
            if ch in _SEPARATORS:
                self.value = False
                return pos, _Tok.SEPARATOR, ch
            if ch in _OPERATOR_CHARS:
                while self.peek() in _OPERATOR_CHARS:
                    self.next()
                self.value = True
                return pos, _Tok.OPERATOR, self.input[pos : self.ppos]
            if _is_space(ch):
                ch = self.next()
                pos = self.pos
                continue
            if self.value:
                while _is_value_char(self.peek()):
                    self.next()
                self.value = False
                return pos, _Tok.VALUE, self.input[pos : self.ppos]
            if ch in _FIELD_CHARS:
                while self.peek() in _FIELD_CHARS:
                    self.next()
                return pos, _Tok.FIELD, self.input[pos : self.ppos]
            return self.pos, _Tok.CHAR, ch

    def _scan_quoted(self, quote: str) -> bool:
        legal = True
        ch = self.next()
        while ch != quote:
            if ch in ("\n", _EOF, _ILLEGAL):
                self._error("quoted literal not terminated")
                return False
            if ch == "\\":
                ch, ok = self._scan_escape(quote)
                legal = legal and ok
            else:
                ch = self.next()
        return legal

    def _scan_escape(self, quote: str) -> tuple[str, bool]:
        ch = self.next()
        if ch in _SIMPLE_ESCAPES or ch == quote:
            return self.next(), True
        if ch in _OCTAL:
            return self._scan_digits(ch, 8, 3)
        if ch == "x":
            return self._scan_digits(self.next(), 16, 2)
        if ch == "u":
            return self._scan_digits(self.next(), 16, 4)
        if ch == "U":
            return self._scan_digits(self.next(), 16, 8)
        self._error("illegal escape sequence")
        return ch, False

    def _scan_digits(self, ch: str, base: int, count: int) -> tuple[str, bool]:
        while count > 0 and _digit_value(ch) < base:
            ch = self.next()
            count -= 1
        if count > 0:
            self._error("illegal numeric escape sequence")
            return ch, False
        return ch, True


# --------------------------------------------------------------------------
# Unquoting (Go string syntax, with "/" and "|" as extra double quotes)


class _QuoteSyntaxError(ValueError):
    def __init__(self) -> None:
        super().__init__("quote syntax error")


_CHAR_ESCAPES: Final = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
}
_HEX_WIDTH: Final = {"x": 2, "u": 4, "U": 8}


def _unquote(s: str) -> str:
    """Decode a quoted token; raises ``_QuoteSyntaxError`` like Go's strconv."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in _QUOTES:
        raise _QuoteSyntaxError
    quote, body = s[0], s[1:-1]
    if "\n" in body:
        raise _QuoteSyntaxError
    if "\\" not in body and quote not in body:
        return body
    # \x and octal escapes produce raw bytes (possibly half a UTF-8 sequence),
    # so the result is assembled as bytes and decoded at the end.
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch == quote:
            raise _QuoteSyntaxError
        if ch != "\\":
            j = i + 1
            while j < n and body[j] != "\\" and body[j] != quote:
                j += 1
            out += body[i:j].encode("utf-8", "surrogatepass")
            i = j
            continue
        if i + 1 >= n:
            raise _QuoteSyntaxError
        c = body[i + 1]
        i += 2
        if c in _CHAR_ESCAPES:
            out.append(_CHAR_ESCAPES[c])
        elif c in _HEX_WIDTH:
            width = _HEX_WIDTH[c]
            digits = body[i : i + width]
            if len(digits) < width or any(_digit_value(d) >= 16 for d in digits):
                raise _QuoteSyntaxError
            i += width
            v = int(digits, 16)
            if c == "x":
                out.append(v)
            elif v > 0x10FFFF:
                raise _QuoteSyntaxError
            else:
                # Go encodes a surrogate code point as U+FFFD.
                out += (chr(v) if not 0xD800 <= v <= 0xDFFF else "\ufffd").encode()
        elif c in _OCTAL:
            digits = body[i - 1 : i + 2]
            if len(digits) < 3 or any(d not in _OCTAL for d in digits):
                raise _QuoteSyntaxError
            i += 2
            v = int(digits, 8)
            if v > 255:
                raise _QuoteSyntaxError
            out.append(v)
        elif c == quote:
            out += c.encode()
        else:
            raise _QuoteSyntaxError
    return out.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent over the scanner, one method per grammar rule."""

    __slots__ = ("input", "max_selectors", "scanner")

    def __init__(self, text: str, max_selectors: int) -> None:
        self.input = text
        self.scanner = _Scanner(text)
        self.max_selectors = max_selectors

    def error(self, pos: int, msg: str) -> errdefs.InvalidArgument:
        """Build containerd's message: the input with the offending character marked."""
        text = self.input
        if pos < len(text):
            where = f"[{text[:pos]} >|{text[pos]}|< {text[pos + 1 :]}]"
        else:
            where = f"[{text}]"
        return errdefs.InvalidArgument(f"filters: parse error: {where}: {msg}")

    def selectors(self) -> Filter:
        selectors = [self.selector()]
        while True:
            ch = self.scanner.peek()
            if ch == ",":
                self.scanner.scan()
                if len(selectors) == self.max_selectors:
                    # Checked before the next one is parsed: each may
                    # compile a regexp, the costly part of parsing.
                    raise self.error(self.scanner.pos, _too_many_selectors())
                selectors.append(self.selector())
            elif ch == _EOF:
                break
            else:
                shown = "\ufffd" if ch == _ILLEGAL else ch
                raise self.error(self.scanner.ppos, f"unexpected input: {shown}")
        return AllOf(tuple(selectors))

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (",", _EOF):
            return Selector(fieldpath, Operator.PRESENT)
        op = self.operator()
        value_pos, value = self.value(allow_alt_quotes=op is Operator.MATCHES)
        if op is not Operator.MATCHES:
            return Selector(fieldpath, op, value)
        try:
            pattern = compile_re2(value)
        except errdefs.InvalidArgument as exc:
            raise self.error(value_pos, exc.message) from exc.__cause__
        return Selector(fieldpath, op, value, pattern)

    def fieldpath(self) -> tuple[str, ...]:
        path = [self.field()]
        while self.scanner.peek() == ".":
            self.scanner.scan()
            path.append(self.field())
        return tuple(path)

    def field(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok is _Tok.FIELD:
            return text
        if tok is _Tok.QUOTED:
            return self.unquote(pos, text, allow_alt_quotes=False)
        if tok is _Tok.ILLEGAL:
            raise self.error(pos, self.scanner.err or "illegal token")
        raise self.error(pos, "expected field or quoted")

    def operator(self) -> Operator:
        pos, tok, text = self.scanner.scan()
        if tok is _Tok.OPERATOR:
            if text == "==":
                return Operator.EQUAL
            if text == "!=":
                return Operator.NOT_EQUAL
            if text == "~=":
                return Operator.MATCHES
            raise self.error(pos, f'unsupported operator "{text}"')
        raise self.error(pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, *, allow_alt_quotes: bool) -> tuple[int, str]:
        pos, tok, text = self.scanner.scan()
        if tok is _Tok.VALUE or tok is _Tok.FIELD:
            return pos, text
        if tok is _Tok.QUOTED:
            return pos, self.unquote(pos, text, allow_alt_quotes=allow_alt_quotes)
        if tok is _Tok.ILLEGAL:
            raise self.error(pos, self.scanner.err or "illegal token")
        raise self.error(pos, "expected value or quoted")

    def unquote(self, pos: int, text: str, *, allow_alt_quotes: bool) -> str:
        # "/re/" and "|re|" exist so a regexp need not escape its quotes;
        # anywhere else they would only be confusing.
        if not allow_alt_quotes and text[0] != '"':
            raise self.error(pos, "invalid quote encountered")
        try:
            return _unquote(text)
        except _QuoteSyntaxError as exc:
            raise self.error(pos, f"unquoting failed: {exc}") from None


def _too_many_selectors() -> str:
    return f"more than {MAX_SELECTORS} selectors in one request"


def parse(text: str) -> Filter:
    """Parse one filter string; the empty string matches everything.

    Raises ``InvalidArgument`` with the position of the first error, or when
    the string is over :data:`MAX_FILTER_LENGTH` or :data:`MAX_SELECTORS`.
    """
    return parse_all((text,)) if text else ALWAYS


def parse_all(texts: Iterable[str]) -> Filter:
    """Parse several filter strings into their OR; no strings match everything.

    This is what a ``List`` request's repeated ``filters`` field means.  All
    the strings together are held to :data:`MAX_FILTER_LENGTH` characters
    and :data:`MAX_SELECTORS` selectors.
    """
    texts = list(texts)
    _check_size(texts)
    budget = MAX_SELECTORS
    parsed: list[Filter] = []
    for text in texts:
        if budget == 0:
            raise errdefs.InvalidArgument(f"filters: {_too_many_selectors()}")
        flt = _Parser(text, budget).selectors() if text else ALWAYS
        budget -= max(1, len(flt.selectors))
        parsed.append(flt)
    if not parsed:
        return ALWAYS
    if len(parsed) == 1:
        return parsed[0]
    if any(f is ALWAYS for f in parsed):
        return ALWAYS
    return AnyOf(tuple(parsed))


def _check_size(texts: Sequence[str]) -> None:
    # The count first: summing lengths over a request's worth of empty
    # strings would be unbounded work of its own.
    if len(texts) > MAX_SELECTORS:
        raise errdefs.InvalidArgument(f"filters: {_too_many_selectors()}")
    length = sum(map(len, texts))
    if length > MAX_FILTER_LENGTH:
        raise errdefs.InvalidArgument(
            f"filters: {length} characters in one request, more than {MAX_FILTER_LENGTH}"
        )


async def parse_async(texts: Sequence[str]) -> Filter:
    """:func:`parse_all` for code on the event loop.

    Compiling RE2 programs (up to :data:`MAX_SELECTORS` of them, each up to
    :data:`REGEXP_MAX_MEM`) is the costly part of parsing, so text that may
    hold a ``~=`` is parsed on the filter pool.
    """
    _check_size(texts)
    if not any("~" in text for text in texts):
        return parse_all(texts)
    return await _off_loop(functools.partial(parse_all, texts))


#: Selector tests (without regexps) cheap enough to run on the event loop:
#: about a millisecond.
_INLINE_TESTS: Final = 4096

# A pool of its own: a request that makes its filters expensive waits for
# these threads, not for the ones that snapshot and content work runs on.
_POOL: Final = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="pycontainerd-filter"
)


async def _off_loop(fn: Callable[[], R]) -> R:
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn)


async def select(flt: Filter, items: Sequence[T], adapt: Callable[[T], AdaptorLike]) -> list[T]:
    """The ``items`` that pass ``flt``, in order, matched off the event loop.

    The client chooses what matching costs (selectors times regexps times
    the bytes they read), so unless it is trivially small it runs on the
    filter pool, where RE2 also lets go of the GIL while it matches.
    """
    if flt is ALWAYS:
        return list(items)
    selectors = flt.selectors
    if len(items) * len(selectors) <= _INLINE_TESTS and not any(
        s.operator is Operator.MATCHES for s in selectors
    ):
        return _select(flt, items, adapt)
    return await _off_loop(functools.partial(_select, flt, items, adapt))


def _select(flt: Filter, items: Sequence[T], adapt: Callable[[T], AdaptorLike]) -> list[T]:
    return [item for item in items if flt.match(adapt(item))]


# --------------------------------------------------------------------------
# Adaptor helpers


_MISSING: Final = object()


def adapt_mapping(obj: Mapping[str, object]) -> FieldFunc:
    """An adaptor over a (possibly nested) mapping, e.g. a decoded event.

    Path components select nested mappings or dataclass attributes.  When the
    next component does not lead into a nested object, the rest of the path
    is joined with ``.`` and looked up as one key, so ``labels.a.b`` finds the
    label ``"a.b"`` exactly as containerd's adaptors do.  A key is present
    even when its value is empty (as a label is); ``None`` is absent.
    """
    return lambda fieldpath: _lookup(obj, fieldpath)


def adapt_object(obj: object) -> FieldFunc:
    """An adaptor over a dataclass (or any object with attributes).

    Field names match attributes with case and underscores ignored, so the
    protobuf-style ``target.mediatype`` finds ``target.media_type``.  As in
    containerd's own adaptors, an empty string attribute counts as absent,
    and a mapping attribute such as ``labels`` takes the rest of the path as
    one dotted key.  Private (``_``) attributes and methods are never exposed.
    """
    return lambda fieldpath: _lookup(obj, fieldpath)


_SCALARS: Final = (str, bytes, int, float, enum.Enum)


def _is_branch(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return False
    return isinstance(value, Mapping) or dataclasses.is_dataclass(value)


def _lookup(obj: object, fieldpath: Sequence[str]) -> tuple[str, bool]:
    i, n = 0, len(fieldpath)
    while True:
        if isinstance(obj, Mapping):
            if i < n:
                child = obj.get(fieldpath[i], _MISSING)
                if child is not _MISSING and _is_branch(child):
                    obj = child
                    i += 1
                    continue
            value = obj.get(".".join(fieldpath[i:]), _MISSING)
            if value is _MISSING or value is None:
                return "", False
            return _stringify(value, empty_is_absent=False)
        if i >= n:
            return _stringify(obj, empty_is_absent=True)
        attr = _attribute_name(obj, fieldpath[i])
        if attr is None:
            return "", False
        obj = getattr(obj, attr)
        i += 1
        if obj is None or callable(obj):
            return "", False
        if i == n and not isinstance(obj, Mapping):
            return _stringify(obj, empty_is_absent=True)


def _stringify(value: object, *, empty_is_absent: bool) -> tuple[str, bool]:
    if isinstance(value, str):
        return value, bool(value) or not empty_is_absent
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, enum.Enum):
        inner = value.value
        return (inner if isinstance(inner, str) else value.name.lower()), True
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
        return text, bool(text) or not empty_is_absent
    if isinstance(value, int | float):
        return str(value), True
    if dataclasses.is_dataclass(value):
        return "", True
    return str(value), True


_ATTRS_BY_TYPE: dict[type, dict[str, str]] = {}


def _normalize(name: str) -> str:
    return name.replace("_", "").lower()


def _attribute_name(obj: object, component: str) -> str | None:
    """Resolve a path component to a public attribute of ``obj``, or None."""
    cls = type(obj)
    names = _ATTRS_BY_TYPE.get(cls)
    if names is None:
        if dataclasses.is_dataclass(cls):
            fields = [f.name for f in dataclasses.fields(cls)]
            names = {_normalize(f): f for f in fields if not f.startswith("_")}
            _ATTRS_BY_TYPE[cls] = names
        else:
            attrs = getattr(obj, "__dict__", None)
            if not isinstance(attrs, dict):
                return None
            names = {_normalize(a): a for a in attrs if not a.startswith("_")}
    return names.get(_normalize(component))
