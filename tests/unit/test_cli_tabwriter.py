"""The tabwriter port lays text out byte for byte as Go's text/tabwriter does.

Expected outputs are Go's documented behaviour (its own test table) and
tables captured from Debian's ctr 1.6.
"""

from __future__ import annotations

import io

import pytest

from pycontainerd.cli.tabwriter import TabWriter, format_table, tabify

pytestmark = pytest.mark.unit


def render(
    src: str, minwidth: int, tabwidth: int, padding: int, padchar: str, **flags: bool
) -> str:
    out = io.StringIO()
    w = TabWriter(out, minwidth, tabwidth, padding, padchar, **flags)
    w.write(src)
    w.flush()
    return out.getvalue()


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("", ""),
        ("\n\n\n", "\n\n\n"),
        ("a\nb\nc", "a\nb\nc"),
        ("\t", ""),  # an empty cell on the last line prints nothing
        ("*\t*", "*.......*"),
        ("*\t*\n", "*.......*\n"),
        ("*\t*\t", "*.......*"),
        ("\t\n", "........\n"),
        ("e) foo\tbar\t\n", "e) foo..bar.....\n"),
        ("Hello, world!\n", "Hello, world!\n"),
    ],
)
def test_cells_pad_to_minwidth(src: str, expected: str) -> None:
    assert render(src, 8, 0, 1, ".") == expected


def test_columns_are_as_wide_as_their_widest_cell_plus_padding() -> None:
    src = "1\t2\t3\t4\n11\t222\t3333\t44444\n"
    assert render(src, 1, 0, 0, ".") == "1.2..3...4\n11222333344444\n"


def test_width_counts_code_points_not_bytes() -> None:
    src = "本\tb\tc\naa\t本本本\tcccc\tddddd\naaa\tbbbb\n"
    assert render(src, 8, 0, 1, ".") == (
        "本.......b.......c\naa......本本本.....cccc....ddddd\naaa.....bbbb\n"
    )


def test_a_line_without_a_cell_in_a_column_ends_that_columns_block() -> None:
    src = (
        "4444\t日本語\t22\t1\t333\n"
        "999999999\t22\n"
        "7\t22\n"
        "\t\t\t88888888\n"
        "\n"
        "666666\t666666\t666666\t4444\n"
        "1\t1\t999999999\t0000000000\n"
    )
    assert render(src, 4, 0, 1, "-") == (
        "4444------日本語-22--1---333\n"
        "999999999-22\n"
        "7---------22\n"
        "------------------88888888\n"
        "\n"
        "666666-666666-666666----4444\n"
        "1------1------999999999-0000000000\n"
    )


def test_form_feed_flushes_and_restarts_columns() -> None:
    src = "1\t2\t3\t4\f11\t222\t3333\t44444\n"
    assert render(src, 1, 0, 0, ".") == "1234\n11222333344444\n"
    assert render(src, 1, 0, 0, ".", debug=True) == "1|2|3|4\n---\n11|222|3333|44444\n"


def test_align_right() -> None:
    src = "a\tè\tc\t\naa\tèèè\tcccc\tddddd\t\naaa\tèèèè\t\n"
    assert render(src, 8, 0, 1, " ", align_right=True) == (
        "       a       è       c\n      aa     èèè    cccc   ddddd\n     aaa    èèèè\n"
    )


def test_discard_empty_columns_keeps_hard_tab_cells() -> None:
    assert render("a\t\tb", 4, 0, 0, ".", discard_empty_columns=True) == "a.......b"
    assert render("a\v\vb", 4, 0, 0, ".", discard_empty_columns=True) == "a...b"


def test_tab_padding_rounds_cells_to_tab_stops() -> None:
    src = "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n"
    assert render(src, 100, 100, 0, "\t") == src
    soft = src.replace("\t", "\v")
    assert render(soft, 100, 100, 0, "\t", discard_empty_columns=True) == (
        "a\tb\td\na\tb\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n"
    )


def test_tabify_terminates_every_cell() -> None:
    assert tabify([["A", "B"], ["x", 1]]) == "A\tB\t\nx\t1\t\n"


def test_format_table_matches_ctr_plugins_ls() -> None:
    # ctr plugins ls against containerd 1.6 (tabwriter 4, 8, 4, ' '); note the
    # trailing padding after STATUS, which ctr has too.
    rows = [
        ["TYPE", "ID", "PLATFORMS", "STATUS"],
        ["io.containerd.content.v1", "content", "-", "ok"],
        ["io.containerd.snapshotter.v1", "aufs", "linux/amd64", "skip"],
        ["io.containerd.grpc.v1", "introspection", "-", "ok"],
    ]
    assert format_table(rows, minwidth=4, tabwidth=8, padding=4) == (
        "TYPE                            ID               PLATFORMS      STATUS    \n"
        "io.containerd.content.v1        content          -              ok        \n"
        "io.containerd.snapshotter.v1    aufs             linux/amd64    skip      \n"
        "io.containerd.grpc.v1           introspection    -              ok        \n"
    )


def test_format_table_matches_ctr_namespaces_ls() -> None:
    rows = [["NAME", "LABELS"], ["nonexist", "x=y"], ["ns1", "a=b,c=d,k=true"]]
    assert format_table(rows, minwidth=1, tabwidth=8, padding=1) == (
        "NAME     LABELS         \nnonexist x=y            \nns1      a=b,c=d,k=true \n"
    )


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TabWriter(io.StringIO(), -1, 8, 1, " ")
    with pytest.raises(ValueError):
        TabWriter(io.StringIO(), 1, 8, 1, "ab")
