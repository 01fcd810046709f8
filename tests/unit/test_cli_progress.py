"""pyctr's progress display: ctr's redrawn table in a terminal, one plain
line per state change elsewhere."""

from __future__ import annotations

import io

import pytest

from pycontainerd.cli.progress import ProgressDisplay, bar, human_bytes
from pycontainerd.distribution.pull import BlobState, Progress
from pycontainerd.images import Descriptor

pytestmark = pytest.mark.unit

LAYER = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "a" * 64, 2048)


def event(state: BlobState, offset: int) -> Progress:
    return Progress("layer-" + LAYER.digest, LAYER, state, offset, LAYER.size)


def test_bar_and_sizes_are_ctrs() -> None:
    assert bar(0.0) == "|" + "-" * 38 + "|"
    assert bar(0.5) == "|" + "+" * 19 + "-" * 19 + "|"
    assert bar(1.0) == "|" + "+" * 38 + "|"
    assert human_bytes(1027926) == "1003.8 KiB"
    assert human_bytes(216) == "216.0 B"


def test_terminal_table_is_redrawn_in_place() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, title="example.com/app:v1")
    display(event("downloading", 1024))
    display.close()
    text = out.getvalue()
    assert "\x1b[" in text and "A\r\x1b[J" in text  # cursor up over the last drawing
    last = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert last[0].startswith("example.com/app:v1:") and "resolved" in last[0]
    assert "downloading" in last[1] and "1.0 KiB/2.0 KiB" in last[1]
    assert "|" + "+" * 19 + "-" * 19 + "|" in last[1]
    assert last[2].startswith("elapsed: ")


def test_plain_output_has_one_line_per_state_change() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False, title="example.com/app:v1")
    display(event("waiting", 0))
    display(event("downloading", 0))
    display(event("downloading", 1024))
    display(event("done", 2048))
    display.close()
    assert out.getvalue().splitlines() == [
        f"layer-{LAYER.digest}: downloading 2.0 KiB",
        f"layer-{LAYER.digest}: done 2.0 KiB",
    ]
