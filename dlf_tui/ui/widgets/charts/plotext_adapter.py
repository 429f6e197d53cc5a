"""Everything this project does with plotext beyond its public plotting calls.

The charts draw through ``PlotextPlot.plt`` (plotext's public API: ``plot``,
``scatter``, ``xlim``, ``yscale`` …).  What needs plotext's (and
``textual_plotext``'s) internals is here, so a plotext upgrade is checked in
one place:

* ``build_strips``: build a chart's character matrix and turn its colour runs
  straight into Textual strips (what ``PlotextPlot.render`` does, minus the
  ANSI encode + parse and the Text-to-Content conversion);
* ``rich_color`` / ``hex_color`` / ``rich_style``: plotext colour values as Rich
  colours and styles;
* ``drawn_series``: the series plotext was handed in the last draw (tests);
* the exact fast helpers: ``fast_hd_group`` and ``fast_matrix_data`` stand in
  for plotext's ``hd_group`` (points → braille cells) and ``get_matrix_data``
  (values → canvas coordinates), the two per-point helpers that take most of
  a chart's build.  They do the same arithmetic with a dict of bit masks and
  numpy, return exactly what plotext's own functions return, and hand
  anything unusual (NaN, strings, mixed marker sizes) back to plotext's
  originals.  ``use_fast_plotext`` swaps them in (on import) or out.
  tests/test_ui_accuracy.py compares them with plotext on random input and a
  whole chart rendered both ways.
"""

from __future__ import annotations

import numpy as np
import plotext._utility as _ptu
from rich.color import Color
from rich.segment import Segment
from rich.style import Style as RichStyle
from textual.strip import Strip
from textual_plotext import PlotextPlot


# -- building a chart -----------------------------------------------------------------------
def build_strips(widget: PlotextPlot, w: int, h: int, app_theme: str) -> list[Strip]:
    """The widget's figure at ``w`` × ``h`` as one ``Strip`` per line, in the
    plotext theme that ``textual_plotext`` uses for ``app_theme``."""
    plot = widget.plt
    plot.plotsize(w, h)
    plot._set_size(w, h)
    plot.theme(widget._get_plotext_theme_name(app_theme))
    plot._set_sizes()
    plot._build_matrix()
    m = plot.monitor.matrix
    markers, fg, st, bg = m.marker, m.fullground, m.style, m.background
    strips = []
    for r in range(len(markers) - 1, -1, -1):
        mrow, frow, srow, brow = markers[r], fg[r], st[r], bg[r]
        n = len(mrow)
        segs = []
        c = 0
        while c < n:
            f, sy, b = frow[c], srow[c], brow[c]
            e = c + 1
            while e < n and frow[e] == f and srow[e] == sy and brow[e] == b:
                e += 1
            segs.append(Segment("".join(mrow[c:e]), rich_style(f, sy, b)))
            c = e
        strips.append(Strip(segs, n).adjust_cell_length(w))
    return strips


def drawn_series(widget: PlotextPlot) -> tuple[int, list[list], list[list]]:
    """How many series the widget's figure holds, their y values and their colours."""
    m = widget.plt.monitor
    return m.signals, m.y, m.color


# -- colours ---------------------------------------------------------------------------------
_STYLES: dict[tuple, RichStyle | None] = {}


def rich_color(c) -> Color | None:
    if c == _ptu.no_color or c is None:
        return None
    if isinstance(c, tuple):
        return Color.from_rgb(*c)
    if isinstance(c, int):
        return Color.from_ansi(c)
    if isinstance(c, str):
        return Color.from_ansi(int(_ptu.get_color_code(c)))
    return None


def hex_color(color: str) -> str:
    """A plotext colour name as #rrggbb (legends are Textual markup)."""
    c = rich_color(color)
    if c is None:
        return "#ffffff"
    t = c.get_truecolor()
    return f"#{t.red:02x}{t.green:02x}{t.blue:02x}"


def rich_style(fg, style, bg) -> RichStyle | None:
    """A plotext (fullground, style, background) triple as a Rich style (cached)."""
    key = (fg, style, bg)
    if key not in _STYLES:
        try:
            rs = RichStyle(color=rich_color(fg), bgcolor=rich_color(bg))
            if isinstance(style, str) and style not in ("default", ""):
                for word in style.split():
                    try:
                        rs += RichStyle.parse(word)
                    except Exception:  # noqa: BLE001 - a plotext-only style name
                        pass
        except Exception:  # noqa: BLE001
            rs = None
        _STYLES[key] = rs
    return _STYLES[key]


# -- the exact fast helpers -------------------------------------------------------------------
PLOTEXT_ORIGINALS = {"hd_group": _ptu.hd_group, "get_matrix_data": _ptu.get_matrix_data}
_MASK_TUPLES: dict[tuple[int, int], tuple[int, ...]] = {}


def fast_hd_group(x: list, y: list, xf: list, yf: list):
    """plotext's ``hd_group``: the cells hit by sub-cell points, in order of
    first hit, and each cell's dot pattern (a tuple of 0/1, bottom row first)."""
    n = len(x)
    if n == 0 or len(y) != n or len(xf) != n or len(yf) != n:
        return PLOTEXT_ORIGINALS["hd_group"](x, y, xf, yf)
    fx, fy = xf[0], yf[0]
    if xf.count(fx) != n or yf.count(fy) != n:
        return PLOTEXT_ORIGINALS["hd_group"](x, y, xf, yf)
    cells: dict[tuple[int, int], int] = {}
    get = cells.get
    for xi, yi in zip(x, y):
        if type(xi) is not int or type(yi) is not int:
            return PLOTEXT_ORIGINALS["hd_group"](x, y, xf, yf)
        key = (xi // fx, yi // fy)
        cells[key] = get(key, 0) | (1 << ((fy - 1 - yi % fy) * fx + xi % fx))
    size = fx * fy
    patterns = []
    for mask in cells.values():
        t = _MASK_TUPLES.get((size, mask))
        if t is None:
            t = _MASK_TUPLES[(size, mask)] = tuple((mask >> b) & 1 for b in range(size))
        patterns.append(t)
    return [k[0] for k in cells], [k[1] for k in cells], patterns


_NUMBERS = (float, int)


def fast_matrix_data(data: list, lim: list, bins: int) -> list:
    """plotext's ``get_matrix_data``: floor(round(0.5 + (bins − 1)·(v − lo)/(hi − lo), 8)),
    with plotext's rounding (halves up), for all values at once."""
    if len(data) < 8 or not all(type(v) in _NUMBERS for v in data):
        return PLOTEXT_ORIGINALS["get_matrix_data"](data, lim, bins)
    lo, hi = lim
    with np.errstate(all="ignore"):
        n = (0.5 + (bins - 1) * (np.asarray(data, dtype=np.float64) - lo) / (hi - lo)) * 10 ** 8
    if not np.all(np.abs(n) < 2.0 ** 52):  # NaN, ±inf, huge: plotext's own way (and errors)
        return PLOTEXT_ORIGINALS["get_matrix_data"](data, lim, bins)
    f = np.floor(n)
    r = np.where(n - f < 0.5, f, np.ceil(n)) * 10 ** (-8)
    return np.floor(r).astype(np.int64).tolist()


def use_fast_plotext(on: bool = True) -> None:
    """Swap plotext's helpers for the fast ones (on import) or back."""
    _ptu.hd_group = fast_hd_group if on else PLOTEXT_ORIGINALS["hd_group"]
    _ptu.get_matrix_data = fast_matrix_data if on else PLOTEXT_ORIGINALS["get_matrix_data"]


use_fast_plotext()
