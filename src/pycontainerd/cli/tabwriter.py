"""Go's ``text/tabwriter``, so pyctr's tables line up exactly as ctr's do.

ctr prints every table through a tabwriter (``plugins ls`` uses minwidth 4,
tabwidth 8, padding 4, padchar ``' '``; ``namespaces ls`` uses 1, 8, 1,
``' '``).  Scripts and eyes compare our output with ctr's, so this is a
faithful port of Go's elastic tabstops rather than a ``str.ljust`` table:

- a cell is text terminated by a tab (``\\t``, or ``\\v`` for a soft cell);
  the text after a line's last tab is not part of any column;
- a column block is a run of adjacent lines that all have a cell in that
  column; its width is the widest cell plus ``padding``, at least ``minwidth``;
- cell widths are counted in code points, as Go counts runes.

HTML filtering and escaped segments (``FilterHTML``, ``StripEscape``) are
not ported: ctr never uses them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

__all__ = ["TabWriter", "format_table", "tabify"]


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    htab: bool  # terminated by a hard tab (a "\v" ends a soft cell)

    @property
    def width(self) -> int:
        return len(self.text)


class TabWriter:
    """Buffer text and write it aligned on :meth:`flush`, as Go's Writer does.

    The keyword flags are Go's ``AlignRight``, ``DiscardEmptyColumns``,
    ``TabIndent`` and ``Debug``.  With ``padchar="\\t"`` cells are padded with
    tabs, assuming a tab is ``tabwidth`` columns wide, and alignment is left.
    """

    def __init__(
        self,
        output: TextIO,
        minwidth: int = 0,
        tabwidth: int = 8,
        padding: int = 1,
        padchar: str = " ",
        *,
        align_right: bool = False,
        discard_empty_columns: bool = False,
        tab_indent: bool = False,
        debug: bool = False,
    ) -> None:
        if minwidth < 0 or tabwidth < 0 or padding < 0:
            raise ValueError("negative minwidth, tabwidth, or padding")
        if len(padchar) != 1:
            raise ValueError("padchar must be one character")
        self._output = output
        self.minwidth = minwidth
        self.tabwidth = tabwidth
        self.padding = padding
        self.padchar = padchar
        self.align_right = align_right and padchar != "\t"
        self.discard_empty_columns = discard_empty_columns
        self.tab_indent = tab_indent
        self.debug = debug
        self._buf: list[str] = []

    def write(self, text: str) -> int:
        self._buf.append(text)
        return len(text)

    def flush(self) -> None:
        text = "".join(self._buf)
        self._buf.clear()
        self._output.write(self.format(text))
        self._output.flush()

    def format(self, text: str) -> str:
        """The aligned form of ``text`` (what a write + flush would print)."""
        out: list[str] = []
        # A form feed ends a line and forces a flush: columns restart after it.
        *sections, last = text.split("\f")
        for section in sections:
            self._format_section(section + "\n", out)
            if self.debug:
                out.append("---\n")
        self._format_section(last, out)
        return "".join(out)

    def _format_section(self, text: str, out: list[str]) -> None:
        lines = _split(text)
        self._format(lines, [], 0, len(lines), out)

    def _format(
        self, lines: list[list[_Cell]], widths: list[int], line0: int, line1: int, out: list[str]
    ) -> None:
        # A direct port of Go's recursive format(): find the next block of
        # lines that have a cell in this column, size the column, recurse.
        column = len(widths)
        this = line0
        while this < line1:
            if column < len(lines[this]) - 1:
                self._write_lines(lines, widths, line0, this, out)
                line0 = this
                width = self.minwidth
                discardable = True
                while this < line1:
                    line = lines[this]
                    if column >= len(line) - 1:
                        break
                    cell = line[column]
                    width = max(width, cell.width + self.padding)
                    if cell.width > 0 or cell.htab:
                        discardable = False
                    this += 1
                if discardable and self.discard_empty_columns:
                    width = 0
                widths.append(width)
                self._format(lines, widths, line0, this, out)
                widths.pop()
                line0 = this
            this += 1
        self._write_lines(lines, widths, line0, line1, out)

    def _write_lines(
        self, lines: list[list[_Cell]], widths: list[int], line0: int, line1: int, out: list[str]
    ) -> None:
        for i in range(line0, line1):
            use_tabs = self.tab_indent
            for j, cell in enumerate(lines[i]):
                if j > 0 and self.debug:
                    out.append("|")
                if not cell.text:
                    if j < len(widths):
                        out.append(self._padding(0, widths[j], use_tabs))
                    continue
                use_tabs = False
                pad = self._padding(cell.width, widths[j], False) if j < len(widths) else ""
                out.append(pad + cell.text if self.align_right else cell.text + pad)
            if i + 1 < len(lines):
                out.append("\n")

    def _padding(self, textw: int, cellw: int, use_tabs: bool) -> str:
        if self.padchar == "\t" or use_tabs:
            if self.tabwidth == 0:
                return ""
            cellw = (cellw + self.tabwidth - 1) // self.tabwidth * self.tabwidth
            return "\t" * ((cellw - textw + self.tabwidth - 1) // self.tabwidth)
        return self.padchar * (cellw - textw)


def _split(text: str) -> list[list[_Cell]]:
    """Lines of cells as Go buffers them; the last line is the unterminated rest.

    ``text`` holds no form feed (:meth:`TabWriter.format` splits on them).
    """
    lines: list[list[_Cell]] = []
    cells: list[_Cell] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in "\t\v\n":
            cells.append(_Cell(text[start:i], htab=ch == "\t"))
            start = i + 1
            if ch == "\n":
                lines.append(cells)
                cells = []
    if start < len(text):
        cells.append(_Cell(text[start:], htab=False))
    lines.append(cells)
    return lines


def tabify(rows: Iterable[Sequence[object]]) -> str:
    """Rows as ctr writes them to a tabwriter: every cell tab-terminated."""
    return "".join("".join(f"{cell}\t" for cell in row) + "\n" for row in rows)


def format_table(
    rows: Iterable[Sequence[object]],
    *,
    minwidth: int = 1,
    tabwidth: int = 8,
    padding: int = 1,
    padchar: str = " ",
) -> str:
    """Rows (header first) aligned like ctr's ``Fprintf(w, "%s\\t%s\\t\\n", ...)``.

    Each cell, the last one too, ends in a tab, so every column is padded and
    lines keep ctr's trailing padding.
    """
    buf = io.StringIO()
    w = TabWriter(buf, minwidth, tabwidth, padding, padchar)
    w.write(tabify(rows))
    w.flush()
    return buf.getvalue()
