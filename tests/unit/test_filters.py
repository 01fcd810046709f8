"""The filter language accepts, rejects and matches what containerd 1.6 does."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from pycontainerd import errdefs, filters

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------
# A small corpus, matched through a hand-written adaptor as a store would.


@dataclass(frozen=True)
class Item:
    name: str = ""
    other: str = ""
    labels: dict[str, str] = field(default_factory=dict)


CORPUS = [
    Item("web", labels={"tier": "front"}),  # 0
    Item("db"),  # 1
    Item("web", labels={"tier": "back", "needs care": "yes"}),  # 2
    Item("db", labels={"backup": "nightly"}),  # 3
    Item("cache", labels={'quirky \\ and "': "yes"}),  # 4
    Item("cache", labels={'quirky \\ and ".post': "yes"}),  # 5
    Item("queue", other="has, a comma"),  # 6
    Item("queuer", other="abc"),  # 7
    Item("proxy", labels={"tier": "edge_v1.2-rc"}),  # 8
    Item("registry", labels={"com.example.foo": "bar"}),  # 9
]


def adapt(item: Item) -> filters.FieldFunc:
    def field_of(path: Sequence[str]) -> tuple[str, bool]:
        head = path[0]
        if head == "name":
            return item.name, bool(item.name)
        if head == "other":
            return item.other, bool(item.other)
        if head == "labels":
            key = ".".join(path[1:])
            return item.labels.get(key, ""), key in item.labels
        return "", False

    return field_of


def matching(expr: str | list[str]) -> list[int]:
    f = filters.parse(expr) if isinstance(expr, str) else filters.parse_all(expr)
    return [i for i, item in enumerate(CORPUS) if f.match(adapt(item))]


ALL = list(range(len(CORPUS)))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", ALL),
        ("name", ALL),
        ("labels.tier", [0, 2, 8]),
        ("labels.tier,name", [0, 2, 8]),
        ("labels.tier==front", [0]),
        ("labels.tier==edge_v1.2-rc", [8]),
        ("name==db", [1, 3]),
        ("name!=db", [0, 2, 4, 5, 6, 7, 8, 9]),
        ("name==db,labels.backup", [3]),
        ('other=="has, a comma"', [6]),
        ("other~=[abc]+,name!=web", [6, 7]),
        ("other~=/[abc]+/,name!=web", [6, 7]),
        ("other~=/[abc]{1,2}/,name!=web", [6, 7]),
        ('other~=/[abc]{0,1}"\\//,name!=web', []),
        ("name==db,labels.backup==nightly", [3]),
        ("name==db,labels.backup==weekly", []),
        ('name==web,labels."needs care"', [2]),
        ('labels."quirky \\\\ and \\""==yes', [4]),
        ('labels."quirky \\\\ and \\"".post==yes', [5]),
        ('labels."com.example.foo"==bar', [9]),
        ("labels.com.example.foo==bar", [9]),
        ("name~=^que", [6, 7]),
        ("name~=|^que|", [6, 7]),
        ("name~=er$", [7]),
        ("name == db", [1, 3]),
        ('"name"==db', [1, 3]),
    ],
)
def test_parse_matches_like_containerd(expr: str, expected: list[int]) -> None:
    assert matching(expr) == expected


def test_not_equal_matches_objects_without_the_field() -> None:
    # containerd compares the absent field as "", so != selects it.
    assert matching("labels.tier!=front") == [1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_parse_all_ors_filters_and_empty_list_matches_everything() -> None:
    assert matching(["name==db", "labels.tier==front"]) == [0, 1, 3]
    assert matching([]) == ALL
    assert filters.parse_all([]) is filters.ALWAYS
    assert filters.parse("") is filters.ALWAYS
    assert matching(["", "name==nothing"]) == ALL


# --------------------------------------------------------------------------
# Events, as real clients subscribe.


def envelope(topic: str, namespace: str = "default") -> filters.FieldFunc:
    return filters.adapt_mapping({"topic": topic, "namespace": namespace})


def test_event_filters_as_written_by_clients() -> None:
    exit_only = filters.parse('topic=="/tasks/exit"')
    assert exit_only.match(envelope("/tasks/exit"))
    assert not exit_only.match(envelope("/tasks/start"))

    # What dockerd sends: namespace and a /-free regexp quoted with pipes.
    dockerd = filters.parse("namespace==moby,topic~=|^/tasks/|")
    assert dockerd.match(envelope("/tasks/oom", "moby"))
    assert not dockerd.match(envelope("/tasks/oom", "default"))
    assert not dockerd.match(envelope("/containers/create", "moby"))

    tasks = filters.parse('namespace==default,topic~="/tasks/.*"')
    assert tasks.match(envelope("/tasks/exit"))
    assert not tasks.match(envelope("/images/create"))


def test_unquoted_slash_value_is_a_regexp_quote_as_in_containerd() -> None:
    # "/" opens a /regexp/ literal, which only "~=" accepts; containerd
    # rejects the unquoted topic the same way.
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        filters.parse("topic==/tasks/exit")
    assert str(excinfo.value) == (
        "filters: parse error: [topic== >|/|< tasks/exit]: invalid quote encountered"
    )
    with pytest.raises(errdefs.InvalidArgument, match=r"unexpected input: \."):
        filters.parse("namespace==default,topic~=/tasks/.*")


def test_regexp_is_unanchored_search() -> None:
    f = filters.parse("image~=^docker.io/")
    assert f.match(filters.adapt_mapping({"image": "docker.io/library/busybox:latest"}))
    assert not f.match(filters.adapt_mapping({"image": "ghcr.io/docker.io/x"}))
    assert filters.parse("image~=busybox").match(
        filters.adapt_mapping({"image": "docker.io/library/busybox:latest"})
    )


# --------------------------------------------------------------------------
# Values and quoting.


def single(expr: str) -> filters.Selector:
    f = filters.parse(expr)
    assert isinstance(f, filters.AllOf)
    (sel,) = f.filters
    assert isinstance(sel, filters.Selector)
    return sel


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ('a=="x\\"y"', 'x"y'),
        ('a=="tab\\there"', "tab\there"),
        ('a=="\\x41\\101\\u00e9\\U0001F600"', "AAé😀"),
        ('a=="\\xc3\\xa9"', "é"),
        ('a=="back\\\\slash"', "back\\slash"),
        ("a==sha256:abc", "sha256:abc"),
        ("a==v.1-2_3+4", "v.1-2_3+4"),
        ("a==牛", "牛"),
        ('a==x"y', 'x"y'),
        ("a~=/foo\\/bar/", "foo/bar"),
        ("a~=|foo/bar|", "foo/bar"),
        ('a~="x"', "x"),
    ],
)
def test_values_are_unquoted_with_go_escapes(expr: str, value: str) -> None:
    assert single(expr).value == value


def test_fieldpath_components_can_be_quoted() -> None:
    sel = single('labels."a.b c".d==x')
    assert sel.fieldpath == ("labels", "a.b c", "d")
    assert sel.operator is filters.Operator.EQUAL


def test_bare_fieldpath_means_present() -> None:
    sel = single("labels.foo")
    assert sel.fieldpath == ("labels", "foo")
    assert sel.operator is filters.Operator.PRESENT


# --------------------------------------------------------------------------
# Errors: InvalidArgument, with containerd's message and position marker.


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "labels.|foo|==omg",
            "[labels. >|||< foo|==omg]: invalid quote encountered",
        ),
        (
            'labels.?"x"==present',
            '[labels. >|?|< "x"==present]: expected field or quoted',
        ),
        ("name==foo,", "[name==foo,]: expected field or quoted"),
        ("labels.", "[labels.]: expected field or quoted"),
        ("image~=,id?=?fbaq", "[image~= >|,|< id?=?fbaq]: expected value or quoted"),
        ("name==", "[name==]: expected value or quoted"),
        ('name=="abc', '[name== >|"|< abc]: quoted literal not terminated'),
        ('"abc', '[ >|"|< abc]: quoted literal not terminated'),
        ('name=="a\\qb"', '[name== >|"|< a\\qb"]: illegal escape sequence'),
        ('name=="\\x4"', '[name== >|"|< \\x4"]: illegal numeric escape sequence'),
        ('name=="\\777"', '[name== >|"|< \\777"]: unquoting failed: quote syntax error'),
        (
            "labels.io.cri-containerd.kind==sandbox",
            '[labels.io.cri >|-|< containerd.kind==sandbox]: expected an operator ("=="|"!="|"~=")',
        ),
        ("name=foo", '[name >|=|< foo]: unsupported operator "="'),
        ("name=!foo", '[name >|=|< !foo]: unsupported operator "=!"'),
        ("name==foo bar", "[name==foo >| |< bar]: unexpected input:  "),
        ("name==foo ", "[name==foo >| |< ]: unexpected input:  "),
        ("   ", "[   ]: expected field or quoted"),
        (",", "[ >|,|< ]: expected field or quoted"),
        ("a\x00b", '[a >|\x00|< b]: expected an operator ("=="|"!="|"~=")'),
    ],
)
def test_parse_errors_match_containerd(expr: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        filters.parse(expr)
    assert str(excinfo.value) == "filters: parse error: " + message


def test_bad_regexp_is_rejected_at_parse_time_with_position() -> None:
    with pytest.raises(errdefs.InvalidArgument) as excinfo:
        filters.parse("name==x,image~=[a-")
    msg = str(excinfo.value)
    assert msg.startswith("filters: parse error: [name==x,image~= >|[|< a-]: ")
    assert "invalid regular expression '[a-'" in msg


def test_parse_all_rejects_when_any_filter_is_bad() -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"\[labels\.\]"):
        filters.parse_all(["name==ok", "labels."])


# --------------------------------------------------------------------------
# Regular expressions: RE2, read as Go's regexp reads it.


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("^[[:digit:]]+$", "123", "12a"),
        ("^[[:alpha:][:digit:]_]+\\z", "ab_1", "ab_1\n"),
        ("^\\Qa.b\\E$", "a.b", "axb"),
        ("^[[]x", "[x", "]x"),
        ("^[a&&b]$", "&", "c"),
        ("^[]a]$", "]", "b"),
        ("^\\d+$", "42", "٤٢"),  # Perl classes are ASCII
        ("^\\w+$", "web_1", "wéb"),
        ("\\bweb\\b", "a web b", "cobweb"),  # so is \b
        ("^\\pL+$", "wéb", "web1"),  # Unicode classes by name
        ("^\\p{Greek}$", "λ", "l"),
        ("^.$", "é", "ab"),  # UTF-8: one character, not one byte
        ("^[^a]$", "\n", "a"),  # a negated class matches newline, as in Go
        ("^web$", "web", "web\nx"),  # ^ and $ are the ends of the text...
        ("(?m)^x$", "web\nx", "web\nxy"),  # ...unless (?m)
        ("(?i)^web$", "WEB", "webs"),
        ("(?s)a.b", "a\nb", "ab"),
        ("(?U)^a+?$", "aa", "ab"),
        ("^(?P<name>a)$", "a", "b"),
        ("^a{2,3}$", "aaa", "aaaa"),
    ],
)
def test_re2_patterns_match_as_go_regexp(pattern: str, yes: str, no: str) -> None:
    sel = filters.Selector(("name",), filters.Operator.MATCHES, pattern)
    assert sel.match(filters.adapt_mapping({"name": yes}))
    assert not sel.match(filters.adapt_mapping({"name": no}))


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("[[:nope:]]", "invalid character class range"),
        ("(", "missing )"),
        ("a{2,1}", "invalid repetition size"),
        ("*", "no argument for repetition operator"),
        ("a\\Z", "invalid escape sequence"),  # Python's \Z is not RE2's
        ("(?=a)", "invalid perl operator"),  # no lookaround, no backreferences
        ("(a)\\1", "invalid escape sequence"),
        ("a\\C", "invalid escape sequence: \\C"),  # RE2 has it; Go does not
        ("x{1001}", "invalid repetition size"),
        ("\\pL{1000}", "pattern too large"),  # over REGEXP_MAX_MEM
        ("\udcff", "invalid UTF-8"),  # a quoted \xff on its own
    ],
)
def test_invalid_re2_patterns_raise_invalid_argument(pattern: str, why: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="invalid regular expression") as excinfo:
        filters.Selector(("name",), filters.Operator.MATCHES, pattern)
    assert why in excinfo.value.message


def test_backslash_c_inside_a_quoted_literal_is_just_text() -> None:
    sel = filters.Selector(("name",), filters.Operator.MATCHES, "^\\Qa\\C\\E$")
    assert sel.match(filters.adapt_mapping({"name": "a\\C"}))


def test_a_quoted_non_utf8_byte_is_refused_in_a_filter() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="invalid UTF-8"):
        filters.parse('name~="\\xff"')


def test_a_backtracking_pattern_matches_in_linear_time() -> None:
    # Python's re takes about 5 s for 28 characters here, doubling with each
    # more; RE2 answers for a thousand at once.
    flt = filters.parse("id~=^(a+)+$")
    start = time.monotonic()
    assert not flt.match(filters.adapt_mapping({"id": "a" * 1000 + "!"}))
    assert flt.match(filters.adapt_mapping({"id": "a" * 1000}))
    assert time.monotonic() - start < 0.5


def test_values_decoded_with_surrogateescape_are_matched_as_their_bytes() -> None:
    value = b"ab\xffcd".decode("utf-8", "surrogateescape")
    assert filters.parse("v~=^ab").match(filters.adapt_mapping({"v": value}))
    assert filters.parse("v~=cd$").match(filters.adapt_mapping({"v": value}))


# --------------------------------------------------------------------------
# Bounds on one request.


def test_filter_text_over_the_limit_is_rejected() -> None:
    half = "x" * (filters.MAX_FILTER_LENGTH // 2 - len("a=="))
    filters.parse_all([f"a=={half}", f"b=={half}"])  # exactly at the limit
    with pytest.raises(errdefs.InvalidArgument, match="characters in one request"):
        filters.parse_all([f"a=={half}", f"b=={half}x"])
    with pytest.raises(errdefs.InvalidArgument, match="characters in one request"):
        filters.parse("a==" + "x" * filters.MAX_FILTER_LENGTH)


def test_selectors_over_the_limit_are_rejected_in_one_string_or_across_strings() -> None:
    most = ",".join(f"l{i}==v" for i in range(filters.MAX_SELECTORS))
    assert len(filters.parse(most).selectors) == filters.MAX_SELECTORS
    with pytest.raises(errdefs.InvalidArgument, match="more than 64 selectors") as excinfo:
        filters.parse(most + ",x")
    assert str(excinfo.value).startswith("filters: parse error: [")
    halves = [most.split(",l32==")[0], "l32==" + most.split(",l32==")[1]]
    assert len(filters.parse_all(halves).selectors) == filters.MAX_SELECTORS
    with pytest.raises(errdefs.InvalidArgument, match="more than 64 selectors"):
        filters.parse_all([*halves, "x"])


def test_many_empty_filter_strings_are_bounded_too() -> None:
    assert filters.parse_all([""] * filters.MAX_SELECTORS) is filters.ALWAYS
    with pytest.raises(errdefs.InvalidArgument, match="more than 64 selectors"):
        filters.parse_all([""] * (filters.MAX_SELECTORS + 1))


def test_parse_async_parses_as_parse_all_and_rejects_the_same() -> None:
    async def scenario() -> None:
        assert await filters.parse_async(["id~=^a", "id==b"]) == filters.parse_all(
            ["id~=^a", "id==b"]
        )
        with pytest.raises(errdefs.InvalidArgument, match="invalid regular expression"):
            await filters.parse_async(["id~=("])
        with pytest.raises(errdefs.InvalidArgument, match="more than 64 selectors"):
            await filters.parse_async([""] * 65)

    asyncio.run(scenario())


# --------------------------------------------------------------------------
# select: matching many objects without holding the event loop.


def _select_on(flt: str, count: int) -> tuple[list[str], set[str]]:
    threads: set[str] = set()

    def adapt(name: str) -> filters.FieldFunc:
        threads.add(threading.current_thread().name)
        return filters.adapt_mapping({"name": name})

    names = [f"n{i}" for i in range(count)]
    return asyncio.run(filters.select(filters.parse(flt), names, adapt)), threads


def test_select_keeps_order_and_runs_small_equality_filters_inline() -> None:
    got, threads = _select_on("name!=n1", 3)
    assert got == ["n0", "n2"]
    assert threads == {"MainThread"}


def test_select_runs_regexps_and_large_lists_on_the_filter_pool() -> None:
    got, threads = _select_on("name~=^n1$", 3)
    assert got == ["n1"]
    assert len(threads) == 1 and threads.pop().startswith("pycontainerd-filter")
    got, threads = _select_on("name!=n1", 10_000)
    assert len(got) == 9_999
    assert len(threads) == 1 and threads.pop().startswith("pycontainerd-filter")


def test_select_with_no_filter_returns_everything_untouched() -> None:
    got, threads = _select_on("", 3)
    assert got == ["n0", "n1", "n2"]
    assert threads == set()


# --------------------------------------------------------------------------
# Adaptors.


def test_match_accepts_callables_and_objects_with_a_field_method() -> None:
    class Fixed:
        def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
            return ("x", True) if tuple(fieldpath) == ("id",) else ("", False)

    f = filters.parse("id==x")
    assert f.match(Fixed())
    assert f.match(lambda path: ("x", True))
    assert not f.match(lambda path: ("", False))


def test_adapt_mapping_walks_nested_mappings_and_joins_label_keys() -> None:
    event = {
        "topic": "/images/create",
        "namespace": "default",
        "event": {"name": "docker.io/library/busybox:latest"},
        "labels": {"a.b": "1", "a": "2", "empty": ""},
    }
    adaptor = filters.adapt_mapping(event)
    assert adaptor(["event", "name"]) == ("docker.io/library/busybox:latest", True)
    assert adaptor(["labels", "a", "b"]) == ("1", True)
    assert adaptor(["labels", "a"]) == ("2", True)
    assert adaptor(["labels", "empty"]) == ("", True)
    assert adaptor(["labels", "missing"]) == ("", False)
    assert adaptor(["topic", "deeper"]) == ("", False)
    assert adaptor(["nope"]) == ("", False)
    # Like containerd's checkMap, the map itself is not a value.
    assert adaptor(["labels"]) == ("", False)


class Kind(enum.Enum):
    ACTIVE = 1
    COMMITTED = 2


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    parent: str = ""
    kind: Kind = Kind.ACTIVE
    color: Color = Color.RED
    readonly: bool = False
    size: int = 0
    _secret: str = "hidden"

    def method(self) -> str:
        return "not a field"


IMAGE = Image(
    name="docker.io/library/busybox:latest",
    target=Descriptor(
        "application/vnd.oci.image.index.v1+json",
        "sha256:" + "a" * 64,
        {"org.opencontainers.image.ref.name": "latest"},
    ),
    labels={"containerd.io/gc.ref.content": "x", "env": "prod"},
)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("name==docker.io/library/busybox:latest", True),
        ("target.mediatype~=index", True),
        ("target.media_type~=index", True),
        ('target.digest~="^sha256:"', True),
        ('target.annotations."org.opencontainers.image.ref.name"==latest', True),
        ('labels."containerd.io/gc.ref.content"', True),
        ("labels.env==prod", True),
        ("labels.env==dev", False),
        ("parent", False),
        ("parent!=x", True),
        ("kind==active", True),
        ("color==red", True),
        ("readonly==false", True),
        ("size==0", True),
        ("_secret", False),
        ("method", False),
        ("nope", False),
        ("name.deeper", False),
    ],
)
def test_adapt_object_resolves_dataclass_fields(expr: str, expected: bool) -> None:
    assert filters.parse(expr).match(filters.adapt_object(IMAGE)) is expected


def test_filters_are_reusable_values() -> None:
    a = filters.parse("name==x,labels.y")
    b = filters.parse("name==x,labels.y")
    assert a == b
    assert hash(a) == hash(b)
    items: list[dict[str, object]] = [{"name": "x", "labels": {"y": ""}}, {"name": "z"}] * 50
    assert sum(a.match(filters.adapt_mapping(i)) for i in items) == 50
