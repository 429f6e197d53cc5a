"""The base of every chart: a ``PlotextPlot`` fed from decimated history.

The dashboard calls ``draw(ctx)`` on its redraw timer when new data arrived; a
chart asks the history for O(width) points over the window, hands them to
plotext (its public API; the rest goes through ``plotext_adapter``), and
caches the built strips until the data, size or theme change (a refresh for
any other reason redraws nothing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from rich.segment import Segment
from rich.style import Style as RichStyle
from textual.strip import Strip
from textual_plotext import PlotextPlot

from dlf_tui.ui import fmt
from dlf_tui.ui.history import RunHistory, ema
from dlf_tui.ui.pyramid import View
from dlf_tui.core.stability import Stability
from dlf_tui.ui.timeline import Marker
from dlf_tui.ui.widgets.charts.plotext_adapter import build_strips, hex_color

# Colours for per-class series (plotext names), and markers that tell the
# classes apart without colour (NO_COLOR) or without braille (ASCII mode).
CLASS_COLORS = ("cyan", "magenta", "green", "blue+", "orange", "red+", "cyan+", "magenta+",
                "green+", "gray")  # plotext's names (it has no yellow)
CLASS_MARKERS = ("x", "o", "+", "*", "#", "%", "@", "&", "=", "~")
MARKER_COLOR = "red"
LOG_FLOOR = 1e-12
BAND = 0.08  # draw a series as its min/max band when points spread over 8 % of the height


@dataclass
class Style:
    """How series look: braille and colour, or distinct markers."""

    no_color: bool = False
    ascii: bool = False

    def _base(self) -> str:
        return "dot" if self.ascii else "braille"

    def main(self, i: int = 0) -> tuple[str, str]:
        """The i-th non-class series (F, CE, overall accuracy …)."""
        colors = ("orange+", "gray+", "blue")
        if self.ascii:
            return (".", "*", ":")[i % 3] if not self.no_color else ("*", ":", ".")[i % 3], colors[i % 3]
        if self.no_color:
            return ("braille", "•", ":")[i % 3], colors[i % 3]
        return "braille", colors[i % 3]

    def cls(self, i: int) -> tuple[str, str]:
        """Class i's series: its own colour and, without colour or braille, its own marker."""
        color = CLASS_COLORS[i % len(CLASS_COLORS)]
        if self.no_color or self.ascii:
            return CLASS_MARKERS[i % len(CLASS_MARKERS)], color
        return "braille", color

    def legend_mark(self, marker: str, color: str) -> str:
        glyph = "━" if marker == "braille" else ("·" if marker == "dot" else marker)
        if self.ascii and glyph == "━":
            glyph = "-"
        if self.no_color:
            return glyph
        return f"[{hex_color(color)}]{glyph}[/]"


@dataclass
class Context:
    """Everything a chart needs for one draw."""

    history: RunHistory
    x0: float
    x1: float
    smoothing: float = 0.0  # EMA time constant in updates (0 = off)
    log_y: bool = True
    markers: list[Marker] = field(default_factory=list)
    style: Style = field(default_factory=Style)
    lr: float | None = None
    stability: Stability | None = None  # the run's stability line (its optimiser's)


class Chart(PlotextPlot):
    """Subclasses set ``TITLE`` and implement ``plot``."""

    TITLE = ""
    EMPTY = "waiting for data…"
    ALLOW_MAXIMIZE = True  # `z` zooms a chart to the whole screen

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.border_title = self.TITLE
        self._gen = 0
        self._cache: tuple[tuple, list[Strip]] | None = None
        self.has_data = False
        self.points = 0  # points handed to plotext in the last draw
        self.yrange: dict[str, list[float]] = {}  # y side → [min, max] of what the last draw drew
        self.ylimits: dict[str, tuple[float, float]] = {}  # y side → fixed limits (accuracy: 0..1)
        self.ylog: set[str] = set()  # the y sides on a log scale
        self.yticks: dict[str, list[float]] = {}  # y side → the ticks the last draw set
        self.draw_ms = 0.0  # the last draw (query + plotext setup)
        self.build_ms = 0.0  # the last build (plotext + ANSI parsing)

    # -- sizes -------------------------------------------------------------------
    def npts(self) -> int:
        """Points per series: one per character column of the plot area."""
        return max(8, self.size.width - 9)

    # -- drawing ------------------------------------------------------------------
    def draw(self, ctx: Context) -> None:
        t0 = time.perf_counter()
        p = self.plt
        p.clear_figure()
        self.points = 0
        self.yrange, self.ylimits, self.ylog, self.yticks = {}, {}, set(), {}
        legend = self.plot(ctx) or ""
        title = f"{self.TITLE}  {legend}" if legend else self.TITLE
        if title != self.border_title:
            self.border_title = title
        self.has_data = self.points > 0
        if self.has_data:
            self._axes(ctx)
        self._gen += 1
        self.draw_ms = (time.perf_counter() - t0) * 1000
        self.refresh()

    def plot(self, ctx: Context) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_log(self, yside: str = "left") -> None:
        """A log y axis (its ticks: 1, 2, 5 × powers of ten)."""
        self.ylog.add(yside)
        self.plt.yscale("log", yside=yside)

    def set_ylim(self, lo: float, hi: float, yside: str = "left") -> None:
        self.ylimits[yside] = (lo, hi)
        self._ylim(lo, hi, yside)

    def _ylim(self, lo: float, hi: float, yside: str) -> None:
        if yside in self.ylog:  # plotext takes a log axis's limits as log10 (its ticks as values)
            if lo <= 0:
                return
            lo, hi = math.log10(lo), math.log10(hi)
        self.plt.ylim(lo, hi, yside=yside)

    def y_tick_count(self) -> int:
        """How many y labels the plot's height holds (one every other row, 2 to 8)."""
        return max(2, min(8, (self.size.height - 2) // 2))

    def _axes(self, ctx: Context) -> None:
        p = self.plt
        x0, x1 = ctx.x0, max(ctx.x1, ctx.x0 + 1)
        p.xlim(x0, x1)
        ticks = fmt.nice_ticks(x0, x1, max(2, self.size.width // 16))
        p.xticks(ticks, [fmt.si(t) for t in ticks])
        for side in set(self.yrange) | set(self.ylimits):
            # round 1-2-5 labels at both ends, not plotext's evenly spaced 2.91 / 2.43 / 1.96
            if side in self.ylimits:
                lo, hi = self.ylimits[side]
                ys = fmt.axis(lo, hi, self.y_tick_count(), side in self.ylog)[2]
            else:
                lo, hi, ys = fmt.axis(*self.yrange[side], self.y_tick_count(), side in self.ylog)
                if hi > lo:
                    self._ylim(lo, hi, side)
            ys = [t for t in ys if lo <= t <= hi]
            if ys and hi > lo:
                self.yticks[side] = ys
                p.yticks(ys, [fmt.tick(t) for t in ys], yside=side)
        for m in ctx.markers:
            if x0 <= m.step <= x1:
                p.vline(m.step, MARKER_COLOR)

    def series(self, view: View, column: str, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
        """x and y of one column: the per-point mean, EMA-smoothed if asked."""
        if len(view) == 0 or column not in view.columns:
            return np.empty(0), np.empty(0)
        y = view.mean[:, view.col(column)]
        if smoothing > 0:
            y = ema(view.x, y, smoothing)
        return view.x, y

    def curve(self, view: View, column: str, marker: str, color: str, smoothing: float,
              floor: float | None = None, yside: str = "left") -> None:
        """Draw one column.  EMA on: a line through the smoothed means.  Off: a
        line through the means where each point's values are tight, or the
        band itself (each point's min and max as dots) where they spread over
        more than a few percent of the chart's height, as a dynamical loss or
        Γ does when a point spans a period.  Dots cost plotext far less than
        the steep zig-zag a line through the means would draw there."""
        if len(view) == 0 or column not in view.columns:
            return
        j = view.col(column)
        if smoothing > 0:
            x, y = self.series(view, column, smoothing)
            self.line(x, y, marker, color, floor, yside=yside)
            return
        mn, mx = view.mn[:, j], view.mx[:, j]
        if floor is not None:
            mn, mx = np.maximum(mn, floor), np.maximum(mx, floor)
            lo, hi = np.log10(mn), np.log10(mx)
        else:
            lo, hi = mn, mx
        with np.errstate(invalid="ignore"):
            spread = hi - lo
            full = np.nanmax(hi) - np.nanmin(lo) if np.any(~np.isnan(hi)) else 0.0
        if full > 0 and nan_median(spread) > BAND * full:
            self.line(view.x, mn, marker, color, floor, scatter=True, yside=yside)
            self.line(view.x, mx, marker, color, floor, scatter=True, yside=yside)
        else:
            self.line(view.x, view.mean[:, j], marker, color, floor, yside=yside)

    def class_curves(self, view: View, items: list[tuple[str, str, str]], smoothing: float,
                     ylim: tuple[float, float] | None = None) -> None:
        """Draw several columns (``(column, marker, colour)``: the classes) so
        that each stays visible where they meet.  A character cell shows one
        series (the last drawn), so where several classes fall in the same cell
        of a column, column j keeps only the ``j mod k``-th of those ``k``: the
        shared stretch reads as a stripe of every class's colour (or marker)
        instead of the one drawn last.  Elsewhere each is drawn as ``curve``
        draws it (a line, or its min/max band)."""
        if len(view) == 0:
            return
        parts = []  # per class: (marker, colour, band?, [y arrays])
        for column, marker, color in items:
            if column not in view.columns:
                continue
            j = view.col(column)
            if smoothing > 0:
                parts.append((marker, color, False, [self.series(view, column, smoothing)[1]]))
                continue
            mn, mx = view.mn[:, j], view.mx[:, j]
            with np.errstate(invalid="ignore"):
                full = np.nanmax(mx) - np.nanmin(mn) if np.any(~np.isnan(mx)) else 0.0
                band = bool(full > 0 and nan_median(mx - mn) > BAND * full)
            parts.append((marker, color, band, [mn, mx] if band else [view.mean[:, j]]))
        if not parts:
            return
        keep = shared_cells([ys for *_, ys in parts], max(2, self.size.height - 2), ylim)
        for (marker, color, band, ys), masks in zip(parts, keep):
            for y, (o, a) in zip(ys, masks):
                if band:
                    self.line(view.x[o | a], y[o | a], marker, color, scatter=True)
                    continue
                for lo, hi in runs_of(a):  # its own stretches: a line
                    if hi - lo > 1:
                        self.line(view.x[lo:hi], y[lo:hi], marker, color)
                    else:
                        o = o.copy()
                        o[lo] = True
                if o.any():  # shared cells it keeps (and lone points): dots
                    self.line(view.x[o], y[o], marker, color, scatter=True)

    def line(self, x: np.ndarray, y: np.ndarray, marker: str, color: str,
             floor: float | None = None, scatter: bool = False, yside: str = "left") -> None:
        """One series; with ``floor`` (log-y) values below it are clamped to it."""
        ok = np.isfinite(y)  # plotext cannot place ±inf (a diverged run's loss) either
        if floor is not None:
            y = np.maximum(y, floor)
        if not ok.any():
            return
        xs, ys = x[ok].tolist(), y[ok].tolist()
        (self.plt.scatter if scatter else self.plt.plot)(xs, ys, marker=marker, color=color, yside=yside)
        self.points += len(xs)
        lo, hi = min(ys), max(ys)
        r = self.yrange.setdefault(yside, [lo, hi])
        r[0], r[1] = min(r[0], lo), max(r[1], hi)

    @staticmethod
    def log_floor(*ys: np.ndarray) -> float:
        """Log-y draws values ≤ 0 at the smallest positive value shown (or 1e-12)."""
        lows = [float(y[y > 0].min()) for y in ys if np.any(y > 0)]
        return min(lows) if lows else LOG_FLOOR

    # -- rendering (Line API) ----------------------------------------------------------
    def rendered_strips(self) -> list[Strip]:
        """The chart as one ``Strip`` per line, built once per draw / size / theme."""
        w, h = self.size.width, self.size.height
        key = (w, h, self._gen, self.app.theme, self.has_data)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        t0 = time.perf_counter()
        if not self.has_data:
            strips = _message_strips(self.EMPTY, w, h)
        else:
            try:
                strips = build_strips(self, w, h, self.app.theme)
            except Exception as err:  # noqa: BLE001 - plotext quirks must not kill the app
                strips = _message_strips(f"cannot draw this chart: {type(err).__name__}: {err}", w, h)
            self.build_ms = (time.perf_counter() - t0) * 1000
        self._cache = (key, strips)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self.rendered_strips()
        return strips[y] if 0 <= y < len(strips) else Strip.blank(self.size.width)


def nan_median(v: np.ndarray) -> float:
    """``np.nanmedian`` of a 1-D array, bit for bit, without its overhead (a
    chart asks once per series per draw)."""
    v = np.sort(v[~np.isnan(v)])
    n = len(v)
    if n == 0:
        return float("nan")
    h = n // 2
    return float(v[h]) if n % 2 else float((v[h - 1] + v[h]) / 2)


def shared_cells(series: list[list[np.ndarray]], rows: int,
                 ylim: tuple[float, float] | None = None) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """For each class (its y arrays, one point per column) and each of its
    arrays: (``own``, ``alone``) boolean masks over the columns.  ``alone``:
    no other class falls in that character cell (row of ``rows`` over the
    common y range, or ``ylim``); ``own``: shared, and this class's turn to
    show it (``j mod k`` among the ``k`` classes there)."""
    finite = [y[np.isfinite(y)] for ys in series for y in ys]
    finite = [f for f in finite if f.size]
    if ylim is not None:
        lo, hi = ylim
    elif finite:
        lo, hi = min(float(f.min()) for f in finite), max(float(f.max()) for f in finite)
    else:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else 1.0
    n = max((y.size for ys in series for y in ys), default=0)
    cells = []  # per class: per array, the cell row of each column (-1: no point)
    for ys in series:
        rows_of = []
        for y in ys:
            with np.errstate(invalid="ignore"):
                r = np.floor((y - lo) / span * (rows - 1) + 0.5)
            rows_of.append(np.where(np.isfinite(r), r, -1).astype(np.int64))
        cells.append(rows_of)
    # who is in each (column, row)
    who: dict[tuple[int, int], list[int]] = {}
    for c, rows_of in enumerate(cells):
        for r in rows_of:
            for j in np.flatnonzero(r >= 0):
                k = who.setdefault((int(j), int(r[j])), [])
                if not k or k[-1] != c:
                    k.append(c)
    out = []
    for c, rows_of in enumerate(cells):
        masks = []
        for r in rows_of:
            own, alone = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            for j in np.flatnonzero(r >= 0):
                k = who[(int(j), int(r[j]))]
                if len(k) == 1:
                    alone[j] = True
                elif k[int(j) % len(k)] == c:
                    own[j] = True
            masks.append((own, alone))
        out.append(masks)
    return out


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) stretches where ``mask`` is True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _message_strips(message: str, w: int, h: int) -> list[Strip]:
    """A dim message, centred, as strips."""
    lines = message.split("\n")
    top = max(0, (h - len(lines)) // 2)
    style = RichStyle(dim=True)
    out = []
    for y in range(h):
        i = y - top
        text = lines[i] if 0 <= i < len(lines) else ""
        text = text[:w].center(w)
        out.append(Strip([Segment(text, style)], w))
    return out
