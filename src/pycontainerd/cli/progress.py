"""Transfer progress as ctr shows it: one line per blob, redrawn in place.

:class:`ProgressDisplay` takes progress events (anything with ``ref``,
``state``, ``offset`` and ``total``: a pull's
:class:`~pycontainerd.distribution.pull.Progress`, a push's
:class:`~pycontainerd.distribution.push.PushProgress`, or events a
Transfer service streams back) and draws ctr's table::

    127.0.0.1:5000/library/busybox:latest: resolved    |++++++++++++++++|
    manifest-sha256:3df7d0...:             done        |++++++++++++++++|
    layer-sha256:bbdb4f...:                downloading |++++++----------| 340.0 KiB/1003.8 KiB
    elapsed: 0.4 s                         total: 340.0 K (850.0 KiB/s)

(bars shortened here; ctr's are 40 characters)

In a terminal the table is redrawn at most every :data:`REDRAW_INTERVAL`
seconds (cursor moved up over the previous drawing); elsewhere (a pipe, a
log) each blob gets one plain line when its state changes, and the final
table is not drawn.  Events may come from any thread; drawing is serialised.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from pycontainerd.cli.tabwriter import TabWriter

__all__ = ["REDRAW_INTERVAL", "ProgressDisplay", "ProgressEvent", "bar", "human_bytes"]

#: Seconds between two redraws in a terminal (ctr's ticker: 100 ms).
REDRAW_INTERVAL = 0.1
#: Width of the bar, its two ``|`` included (ctr's ``%40r``).
BAR_WIDTH = 40
#: Most blob lines kept (a huge image draws its last ones; the total counts all).
MAX_LINES = 512

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_ACTIVE = frozenset({"downloading", "uploading"})
_EMPTY = frozenset({"waiting", "resolving"})


class ProgressEvent(Protocol):
    @property
    def ref(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def total(self) -> int: ...


def human_bytes(size: float) -> str:
    """``%.1f`` in powers of 1024, as ctr's progress.Bytes."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {_UNITS[unit]}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """ctr's progress bar: ``|+++---|``, ``width`` characters in all."""
    inner = max(width - 2, 0)
    filled = round(inner * min(max(fraction, 0.0), 1.0))
    return "|" + "+" * filled + "-" * (inner - filled) + "|"


@dataclass
class _Line:
    ref: str
    state: str
    offset: int
    total: int


class ProgressDisplay:
    """Draws progress events on ``out`` (a terminal: redrawn table; else plain lines)."""

    def __init__(
        self, out: TextIO | None = None, *, tty: bool | None = None, title: str = ""
    ) -> None:
        self._out = out if out is not None else sys.stdout
        self._tty = self._out.isatty() if tty is None else tty
        self._lines: dict[str, _Line] = {}
        self._title: _Line | None = None
        self._start = time.monotonic()
        self._drawn = 0
        self._last_draw = 0.0
        self._lock = threading.Lock()
        if title:
            self.set_title(title, "resolving")

    def set_title(self, ref: str, state: str) -> None:
        """The first line: the reference and where resolving it stands."""
        with self._lock:
            self._title = _Line(ref, state, 0, 0)
            self._changed(self._title, force=True)

    def __call__(self, event: ProgressEvent) -> None:
        self.update(event)

    def update(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._title is not None and self._title.state == "resolving":
                # A blob is under way: the reference resolved.
                self._title.state = "resolved"
            line = self._lines.get(event.ref)
            if line is None:
                if len(self._lines) >= MAX_LINES:
                    oldest = next(iter(self._lines))
                    del self._lines[oldest]
                line = self._lines[event.ref] = _Line(event.ref, "", 0, event.total)
            new_state = line.state != event.state
            line.state, line.offset, line.total = event.state, event.offset, event.total
            self._changed(line, force=new_state and not self._tty)

    def close(self) -> None:
        """Draw the final state (a terminal's table; nothing more for plain lines)."""
        with self._lock:
            if self._tty:
                self._draw()

    # -- drawing (under the lock)

    def _changed(self, line: _Line, *, force: bool) -> None:
        if not self._tty:
            if force and line.state not in _EMPTY:
                size = f" {human_bytes(line.total)}" if line.total else ""
                self._out.write(f"{line.ref}: {line.state}{size}\n")
                self._out.flush()
            return
        now = time.monotonic()
        if now - self._last_draw >= REDRAW_INTERVAL:
            self._draw()

    def _table(self) -> str:
        rows: list[str] = []
        lines = ([self._title] if self._title else []) + list(self._lines.values())
        done = 0
        for line in lines:
            done += line.offset
            if line.state in _ACTIVE:
                fraction = line.offset / line.total if line.total > 0 else 0.0
                rows.append(
                    f"{line.ref}:\t{line.state}\t{bar(fraction)}\t"
                    f"{human_bytes(line.offset):>8.8}/{human_bytes(line.total)}\t\n"
                )
            elif line.state in _EMPTY:
                rows.append(f"{line.ref}:\t{line.state}\t{bar(0.0)}\t\n")
            else:
                rows.append(f"{line.ref}:\t{line.state}\t{bar(1.0)}\t\n")
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rows.append(
            f"elapsed: {elapsed:<4.1f}s\ttotal: {human_bytes(done):>7.7}\t"
            f"({human_bytes(done / elapsed)}/s)\t\n"
        )
        return "".join(rows)

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        text = _aligned(self._table())
        # Up over the last drawing, then clear to the end of the screen.
        prefix = f"\x1b[{self._drawn}A\r\x1b[J" if self._drawn else ""
        self._out.write(prefix + text)
        self._out.flush()
        self._drawn = text.count("\n")


def _aligned(text: str) -> str:
    buf = io.StringIO()
    writer = TabWriter(buf, 1, 8, 1, " ")
    writer.write(text)
    writer.flush()
    return buf.getvalue()
