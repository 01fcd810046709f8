"""Fuzz the filter language: parse anything, match anything, in bounded time.

* Any text parses to a filter or is refused with ``InvalidArgument``;
  nothing else escapes, and parsing and matching never take more than a
  second (``~=`` patterns included: they must not backtrack exponentially).
* A filter written from known selectors parses, and matches exactly the
  objects those selectors describe (checked against a reference evaluation
  of the selectors, with Python's ``re`` on a common subset of regexps).
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

import pytest
from hypothesis import strategies as st

from pycontainerd import errdefs, filters
from tests.fuzz import _harness
from tests.fuzz._filters import FIELDS, LABEL_KEYS, Selector, filter_texts, regexes, selectors

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

SECONDS = 1.0


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise Hang if the body runs longer (re and RE2 calls are interruptible)."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs in whatever frame Python is in; an exception
        # raised inside a gc callback (hypothesis times collections) cannot
        # propagate and is "ignored".  Try again a moment later instead.
        if frame is not None and frame.f_code.co_name == "gc_callback":
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            return
        raise Hang(f"{what} took more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- objects to match --------------------------------------------------------------------

_STRS = st.sampled_from(
    ["", "web", "a", "é", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "x y", "a,b"]
) | st.text(max_size=12)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.none() | _STRS for name in FIELDS if name != "labels"},
        "labels": st.dictionaries(st.sampled_from(LABEL_KEYS) | st.text(max_size=5), _STRS),
    },
)


@dataclass
class Record:
    """An object as a store hands it to adapt_object."""

    name: str = ""
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)


RECORDS = st.builds(Record, _STRS, _STRS, st.dictionaries(st.sampled_from(LABEL_KEYS), _STRS))


def check_text(case: tuple[str, list[dict[str, object]], list[Record]]) -> None:
    text, objects, records = case
    with time_limit(SECONDS, f"parsing and matching {text!r}"):
        try:
            parsed = filters.parse(text)
        except errdefs.InvalidArgument as exc:
            assert str(exc), "a refusal says why"
            return
        for obj in objects:
            assert isinstance(parsed.match(filters.adapt_mapping(obj)), bool)
        for record in records:
            assert isinstance(parsed.match(filters.adapt_object(record)), bool)
        # Several strings are their OR; the parse must not depend on company.
        both = filters.parse_all([text, text])
        for obj in objects:
            adaptor = filters.adapt_mapping(obj)
            assert both.match(adaptor) == parsed.match(adaptor)


def test_filter_parser_takes_any_text() -> None:
    cases = st.tuples(filter_texts, st.lists(OBJECTS, max_size=3), st.lists(RECORDS, max_size=2))
    _harness.run("filter-parse-text", cases, check_text, short=400)


# -- meaning ---------------------------------------------------------------------------


def reference_field(obj: dict[str, object], path: tuple[str, ...]) -> tuple[str, bool]:
    """What adapt_mapping promises for the flat objects of OBJECTS."""
    labels = obj.get("labels")
    if isinstance(labels, dict) and path[0] == "labels":
        value = labels.get(".".join(path[1:]))
    else:
        value = obj.get(".".join(path))
    if value is None:
        return "", False
    assert isinstance(value, str)
    return value, True


def reference_search(pattern: str, subject: str) -> bool | None:
    """Go's regexp.MatchString, by Python's re on the common subset; None
    when Python's backtracking takes too long to say."""
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"  # Python's $ also matches before a final newline
    try:
        with time_limit(0.2, "reference"):
            return re.search(pattern, subject, re.ASCII) is not None
    except Hang:
        return None


def reference_match(sel: Selector, obj: dict[str, object]) -> bool | None:
    value, present = reference_field(obj, sel.path)
    if sel.op == "":
        return present
    if sel.op == "==":
        return present and value == sel.value
    if sel.op == "!=":
        return value != sel.value
    return reference_search(sel.value, value)


def meant(alternatives: list[list[Selector]], obj: dict[str, object]) -> bool | None:
    """The OR of ANDs, or None when the reference could not decide."""
    results = [[reference_match(s, obj) for s in sels] for sels in alternatives]
    if any(all(r is True for r in rs) for rs in results):
        return True
    if all(any(r is False for r in rs) for rs in results):
        return False
    return None


def check_meaning(case: tuple[list[list[Selector]], list[dict[str, object]]]) -> None:
    alternatives, objects = case
    texts = [",".join(s.text for s in sels) for sels in alternatives]
    with time_limit(SECONDS, f"parsing and matching {texts!r}"):
        try:
            parsed = filters.parse_all(texts)
        except errdefs.InvalidArgument as exc:
            raise AssertionError(f"{texts!r} is valid: {exc}") from exc
        got = [parsed.match(filters.adapt_mapping(obj)) for obj in objects]
    for obj, result in zip(objects, got, strict=True):
        want = meant(alternatives, obj)
        assert want is None or result == want, f"{texts!r} on {obj!r}: got {result}, meant {want}"


def test_filter_strings_mean_what_their_selectors_say() -> None:
    cases = st.tuples(
        st.lists(st.lists(selectors(), min_size=1, max_size=3), min_size=1, max_size=2),
        st.lists(OBJECTS, min_size=1, max_size=4),
    )
    _harness.run("filter-parse-grammar", cases, check_meaning, short=300)


def check_match_time(case: tuple[str, str]) -> None:
    pattern, subject = case
    text = "name~=" + '"' + pattern.replace("\\", "\\\\").replace('"', '\\"') + '"'
    with time_limit(SECONDS, f"matching {text!r} against {subject!r}"):
        parsed = filters.parse(text)
        got = parsed.match(filters.adapt_mapping({"name": subject}))
    want = reference_search(pattern, subject)
    assert want is None or got == want, (text, subject)


def test_filter_regexps_match_in_linear_time() -> None:
    # Long runs of one character against nested quantifiers: exponential
    # for a backtracking engine, linear for RE2.
    subjects = st.tuples(st.sampled_from(["a", "b", "0", "é", "ab"]), st.integers(0, 40)).map(
        lambda t: t[0] * t[1] + "!"
    )
    _harness.run("filter-match", st.tuples(regexes(depth=3), subjects), check_match_time, short=200)
