"""A heatmap with a cursor: one coloured cell per (row, column) of a grid, the
sweep's phase diagram (accuracy over amplitude × period).

Each cell shows its mean and, when there is room, ± its spread and how many of
its seeds reached the threshold (``k/n``).  The colour scale (viridis: dark
blue → yellow, monotonic in brightness, so ``NO_COLOR``'s grey levels keep the
order) runs over ``lo..hi``, drawn as a bar under the grid; with ``NO_COLOR``
the numbers carry the value, and a shading glyph marks each cell's place on
the scale.  Arrow keys (or a click) move the cursor; ``Moved`` tells the screen.
A grid larger than the widget scrolls to keep the cursor in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.widget import Widget

# viridis at 9 stops (#440154 … #fde725)
PALETTE = ((0x44, 0x01, 0x54), (0x47, 0x2d, 0x7b), (0x3b, 0x52, 0x8b), (0x2c, 0x72, 0x8e),
           (0x21, 0x91, 0x8c), (0x28, 0xae, 0x80), (0x5e, 0xc9, 0x62), (0xad, 0xdc, 0x30),
           (0xfd, 0xe7, 0x25))
SHADES = "░▒▓█"
MIN_CELL_W, MAX_CELL_W = 7, 16  # characters per cell, the 1-column gap included
EMPTY = Style(dim=True)


@dataclass(frozen=True)
class HeatCell:
    """One cell: the mean over its seeds (NaN: no data yet), the spread, and
    ``hits`` of ``n`` seeds at or above the threshold."""

    mean: float = math.nan
    std: float = math.nan
    hits: int = 0
    n: int = 0


def scale_color(f: float) -> tuple[int, int, int]:
    """The colour of ``f`` in 0..1 on the scale."""
    f = min(1.0, max(0.0, f)) * (len(PALETTE) - 1)
    i = min(int(f), len(PALETTE) - 2)
    t = f - i
    a, b = PALETTE[i], PALETTE[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))  # type: ignore[return-value]


def cell_style(f: float) -> Style:
    r, g, b = scale_color(f)
    light = 0.2126 * r + 0.7152 * g + 0.0722 * b > 140
    return Style(color=Color.from_rgb(0, 0, 0) if light else Color.from_rgb(255, 255, 255),
                 bgcolor=Color.from_rgb(r, g, b))


def fraction(value: float, lo: float, hi: float) -> float:
    return 0.5 if hi <= lo else (value - lo) / (hi - lo)


def _fit(text: str, width: int) -> str:
    return text[:width].center(width)


class Heatmap(Widget, can_focus=True):
    BINDINGS = [
        Binding("up", "move(-1, 0)", "Move", key_display="↑↓←→"),
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
        Binding("home", "jump(0)", "First cell", show=False),
        Binding("end", "jump(1)", "Last cell", show=False),
    ]

    class Moved(Message):
        """The user moved the cursor to ``row``, ``col``."""

        def __init__(self, heatmap: "Heatmap", row: int, col: int) -> None:
            super().__init__()
            self.heatmap = heatmap
            self.row = row
            self.col = col

    def __init__(self, *, monochrome: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.monochrome = monochrome
        self.rows: list[str] = []
        self.cols: list[str] = []
        self.cells: list[list[HeatCell]] = []
        self.corner = ""
        self.caption = ""
        self.lo, self.hi = 0.0, 1.0
        self.cursor = (0, 0)
        self._top = 0
        self._left = 0
        self._geom: tuple[int, int, int, int, int, int] | None = None  # label_w, cw, ch, top, left, header

    # -- data -----------------------------------------------------------------------
    def set_data(self, rows: list[str], cols: list[str], cells: list[list[HeatCell]],
                 corner: str = "", caption: str = "", lo: float = 0.0, hi: float = 1.0) -> None:
        reshaped = (len(rows), len(cols)) != (len(self.rows), len(self.cols))
        self.rows, self.cols, self.cells = list(rows), list(cols), cells
        self.corner, self.caption, self.lo, self.hi = corner, caption, lo, hi
        r, c = self.cursor
        self.cursor = (min(r, max(0, len(rows) - 1)), min(c, max(0, len(cols) - 1)))
        self.refresh(layout=reshaped)

    def cell(self, row: int, col: int) -> HeatCell:
        return self.cells[row][col]

    def set_cursor(self, row: int, col: int) -> None:
        """Move the cursor without telling the screen (it asked)."""
        row = min(max(0, row), max(0, len(self.rows) - 1))
        col = min(max(0, col), max(0, len(self.cols) - 1))
        if (row, col) != self.cursor:
            self.cursor = (row, col)
            self.refresh()

    def action_move(self, dr: int, dc: int) -> None:
        self._user_move(self.cursor[0] + dr, self.cursor[1] + dc)

    def action_jump(self, last: int) -> None:
        if last:
            self._user_move(len(self.rows) - 1, len(self.cols) - 1)
        else:
            self._user_move(0, 0)

    def _user_move(self, row: int, col: int) -> None:
        before = self.cursor
        self.set_cursor(row, col)
        if self.cursor != before:
            self.post_message(self.Moved(self, *self.cursor))

    # -- geometry ---------------------------------------------------------------------
    def _label_w(self, width: int) -> int:
        want = max([len(self.corner)] + [len(r) for r in self.rows]) + 1
        return max(3, min(want, width // 3))

    def _cell_w(self, width: int) -> int:
        free = width - self._label_w(width)
        return max(MIN_CELL_W, min(MAX_CELL_W, free // max(1, len(self.cols))))

    @staticmethod
    def _cell_h(nrows: int, lines: int) -> int:
        """3 lines per cell (mean, ± spread, k/n) when they fit, else 2, else 1."""
        for h in (3, 2):
            if nrows * h <= lines:
                return h
        return 1

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        budget = max(3, viewport.height // 2 - 2)  # at most about half the screen
        return 2 + len(self.rows or [""]) * self._cell_h(len(self.rows or [""]), budget)

    def _layout(self) -> tuple[int, int, int, int, int, int, int]:
        w, h = self.size
        label_w, cw = self._label_w(w), self._cell_w(w)
        lines = max(1, h - 2)  # header and scale lines
        ch = self._cell_h(max(1, len(self.rows)), lines)
        vis_r = max(1, lines // ch)
        vis_c = max(1, (w - label_w) // cw)
        r, c = self.cursor
        if r < self._top:
            self._top = r
        elif r >= self._top + vis_r:
            self._top = r - vis_r + 1
        if c < self._left:
            self._left = c
        elif c >= self._left + vis_c:
            self._left = c - vis_c + 1
        self._top = max(0, min(self._top, max(0, len(self.rows) - vis_r)))
        self._left = max(0, min(self._left, max(0, len(self.cols) - vis_c)))
        return label_w, cw, ch, vis_r, vis_c, self._top, self._left

    # -- drawing ------------------------------------------------------------------------
    def cell_lines(self, cell: HeatCell, inner: int, ch: int) -> list[str]:
        """The text of a cell, ``ch`` lines of ``inner`` characters."""
        if cell.n == 0 or math.isnan(cell.mean):
            return [_fit("·", inner)] + [" " * inner] * (ch - 1)
        mean = f"{cell.mean:.3f}" if inner >= 5 else f"{cell.mean:.2f}".lstrip("0")
        if self.monochrome and inner >= len(mean) + 2:
            f = fraction(cell.mean, self.lo, self.hi)
            mean = SHADES[min(len(SHADES) - 1, max(0, int(f * len(SHADES))))] + " " + mean
        parts = [mean]
        if not math.isnan(cell.std):
            parts.append(f"±{cell.std:.3f}" if inner >= 6 else f"±{cell.std:.2f}".replace("0.", "."))
        parts.append(f"{cell.hits}/{cell.n}")
        if ch >= 3:
            lines = parts[:3]
        elif ch == 2:
            rest = " ".join(parts[1:])
            lines = [parts[0], rest if len(rest) <= inner else parts[1]]
        else:
            line = parts[0]
            for p in parts[1:]:
                if len(line) + 1 + len(p) <= inner:
                    line += " " + p
            lines = [line]
        lines += [""] * (ch - len(lines))
        return [_fit(s, inner) for s in lines[:ch]]

    def render(self) -> Text:
        w, h = self.size
        if not self.rows or not self.cols or w < 8:
            return Text("waiting for the sweep…", style=EMPTY)
        label_w, cw, ch, vis_r, vis_c, top, left = self._layout()
        self._geom = (label_w, cw, ch, top, left, 1)
        inner = cw - 1
        out = Text(no_wrap=True, overflow="crop")
        bold = Style(bold=True)
        out.append(_fit(self.corner, label_w - 1)[: label_w - 1].ljust(label_w), Style(dim=True))
        cols = range(left, min(len(self.cols), left + vis_c))
        for c in cols:
            out.append(_fit(self.cols[c], inner) + " ", bold if c == self.cursor[1] else Style(dim=True))
        for r in range(top, min(len(self.rows), top + vis_r)):
            for line in range(ch):
                out.append("\n")
                label = self.rows[r] if line == 0 else ""
                out.append(label[: label_w - 1].rjust(label_w - 1) + " ",
                           bold if r == self.cursor[0] else Style(dim=True))
                for c in cols:
                    cell = self.cells[r][c]
                    text = self.cell_lines(cell, inner, ch)[line]
                    if cell.n == 0 or math.isnan(cell.mean):
                        style = EMPTY
                    else:
                        style = cell_style(fraction(cell.mean, self.lo, self.hi))
                    if (r, c) == self.cursor:
                        style = style + Style(reverse=True, bold=True)
                    out.append(text, style)
                    out.append(" ")
        out.append("\n")
        out.append_text(self.scale_text(w))
        return out

    def scale_text(self, width: int) -> Text:
        """The colour bar: lo ▇▇▇▇ hi, the caption, and where the view is scrolled."""
        t = Text(no_wrap=True, overflow="crop")
        t.append(f"{self.lo:.2f} ")
        for i in range(8):
            f = i / 7
            glyph = SHADES[min(3, int(f * 4))] if self.monochrome else " "
            t.append(glyph * 2, cell_style(f))
        t.append(f" {self.hi:.2f}  ")
        t.append(self.caption, Style(dim=True))
        _, _, _, vis_r, vis_c, top, left = self._layout()
        if vis_r < len(self.rows) or vis_c < len(self.cols):
            t.append(f"  rows {top + 1}–{min(len(self.rows), top + vis_r)}/{len(self.rows)}, "
                     f"cols {left + 1}–{min(len(self.cols), left + vis_c)}/{len(self.cols)}",
                     Style(dim=True))
        return t

    def on_click(self, event: events.Click) -> None:
        if self._geom is None:
            return
        label_w, cw, ch, top, left, header = self._geom
        x, y = event.x, event.y - header
        if x < label_w or y < 0:
            return
        row, col = top + y // ch, left + (x - label_w) // cw
        if row < len(self.rows) and col < len(self.cols):
            self._user_move(row, col)
