"""The base of every chart: a ``PlotextPlot`` fed from decimated history.

The dashboard calls ``draw(ctx)`` on its redraw timer when new data arrived; a
chart asks the history for O(width) points over the window, hands them to
plotext (its public API; the rest goes through ``plotext_adapter``), and
caches the built strips until the data, size or theme change (a refresh for
any other reason redraws nothing).
"""

from __future__ import annotations

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

    def _axes(self, ctx: Context) -> None:
        p = self.plt
        x0, x1 = ctx.x0, max(ctx.x1, ctx.x0 + 1)
        p.xlim(x0, x1)
        ticks = fmt.nice_ticks(x0, x1, max(2, self.size.width // 16))
        p.xticks(ticks, [fmt.si(t) for t in ticks])
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
              floor: float | None = None) -> None:
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
            self.line(x, y, marker, color, floor)
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
            self.line(view.x, mn, marker, color, floor, scatter=True)
            self.line(view.x, mx, marker, color, floor, scatter=True)
        else:
            self.line(view.x, view.mean[:, j], marker, color, floor)

    def line(self, x: np.ndarray, y: np.ndarray, marker: str, color: str,
             floor: float | None = None, scatter: bool = False) -> None:
        """One series; with ``floor`` (log-y) values below it are clamped to it."""
        ok = ~np.isnan(y)
        if floor is not None:
            ok &= np.isfinite(y)
            y = np.maximum(y, floor)
        if not ok.any():
            return
        xs, ys = x[ok].tolist(), y[ok].tolist()
        (self.plt.scatter if scatter else self.plt.plot)(xs, ys, marker=marker, color=color)
        self.points += len(xs)

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
