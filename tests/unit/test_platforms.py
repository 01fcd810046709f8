"""Platform specifiers parse, normalise and match as containerd's do."""

from __future__ import annotations

import pytest

from pycontainerd import errdefs, platforms
from pycontainerd.platforms import Platform

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/arm", Platform("linux", "arm")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/armhf", Platform("linux", "arm")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("windows/amd64", Platform("windows", "amd64")),
        ("linux", Platform("linux", platforms.default().architecture)),
        ("arm64", Platform("linux", "arm64")),
        ("macos/arm64", Platform("darwin", "arm64")),
    ],
)
def test_parse_normalises_as_containerd(spec: str, expected: Platform) -> None:
    assert platforms.parse(spec) == expected


@pytest.mark.parametrize("spec", ["", "linux/", "linux/amd64/v1/x", "linux/*", "foo", "a b/c"])
def test_parse_rejects_junk(spec: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        platforms.parse(spec)


def test_format_round_trips_and_names_unknown_os() -> None:
    assert platforms.format(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert platforms.format(Platform("linux", "amd64")) == "linux/amd64"
    assert platforms.format(Platform("", "amd64")) == "unknown/amd64"


def test_default_is_the_host() -> None:
    assert platforms.default() == Platform("linux", "amd64")
    assert platforms.only(platforms.default()).match(Platform("linux", "x86_64"))


def test_only_accepts_older_arm_variants_ranked_lower() -> None:
    m = platforms.only(Platform("linux", "arm", "v7"))
    v7, v6, v8 = (Platform("linux", "arm", v) for v in ("v7", "v6", "v8"))
    assert m.match(v7) and m.match(v6)
    assert not m.match(v8)
    assert m.less(v7, v6) and not m.less(v6, v7)


def test_only_arm64_runs_32_bit_arm_but_prefers_arm64() -> None:
    m = platforms.only(platforms.parse("linux/arm64"))
    arm64, arm7 = Platform("linux", "arm64", "v8"), Platform("linux", "arm", "v7")
    assert m.match(arm64) and m.match(arm7)
    assert m.less(arm64, arm7)
    assert not m.match(Platform("linux", "amd64"))


def test_strict_matchers_take_only_the_platform() -> None:
    assert not platforms.only_strict(Platform("linux", "arm", "v7")).match(
        Platform("linux", "arm", "v6")
    )
    assert platforms.default_strict().match(Platform("linux", "amd64"))
    assert not platforms.default_strict().match(Platform("linux", "386"))


def test_ordered_prefers_the_first_given() -> None:
    a, b = Platform("linux", "arm64"), Platform("linux", "amd64")
    m = platforms.ordered(a, b)
    assert m.less(a, b) and not m.less(b, a)
    assert not m.match(Platform("windows", "amd64"))


def test_any_platform_matches_everything_prefers_nothing() -> None:
    m = platforms.any_platform()
    a, b = Platform("plan9", "386"), Platform("linux", "amd64")
    assert m.match(a) and not m.less(a, b) and not m.less(b, a)


def test_json_form_follows_the_oci_field_names() -> None:
    p = Platform("windows", "amd64", "", "10.0.17763", ("win32k",))
    doc = p.to_json()
    assert doc == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763",
        "os.features": ["win32k"],
    }
    assert Platform.from_json(doc) == p
    with pytest.raises(errdefs.InvalidArgument):
        Platform.from_json({"os": 1})
