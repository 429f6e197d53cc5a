"""One column of several runs on one chart (the compare view): each run is one
series with its own colour and marker, from that run's decimated history."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlf_tui.core import series as S
from dlf_tui.ui.history import RunHistory
from dlf_tui.ui.timeline import Marker
from dlf_tui.ui.widgets.charts.base import CLASS_COLORS, Chart, Style

# A run's marker: its own character (32 distinct), so NO_COLOR tells runs apart.
RUN_MARKERS = "xo+*#%@&=~$?" + "abcdefhkmnpqrsuvwyz0"
MAX_RUNS = len(RUN_MARKERS)


def run_style(style: Style, i: int) -> tuple[str, str]:
    """(marker, colour) of the i-th run: colours cycle, markers never repeat.
    In colour the first ten runs are braille lines (the colour tells them apart)."""
    color = CLASS_COLORS[i % len(CLASS_COLORS)]
    if not (style.no_color or style.ascii) and i < len(CLASS_COLORS):
        return "braille", color
    return RUN_MARKERS[i % MAX_RUNS], color


@dataclass
class CompareContext:
    """Everything a compare chart needs for one draw."""

    runs: list[tuple[RunHistory, str, str]]  # (history, marker, colour)
    x0: float
    x1: float
    smoothing: float = 0.0
    log_y: bool = True
    style: Style = field(default_factory=Style)
    markers: list[Marker] = field(default_factory=list)  # none: each run has its own edits


class CompareChart(Chart):
    """``series``/``column`` of every run; ``log`` charts follow the log-y toggle,
    ``unit`` charts (accuracies) span 0..1."""

    def __init__(self, title: str, series: str, column: str, log: bool = False,
                 unit: bool = False, **kw) -> None:
        self.TITLE = title
        super().__init__(**kw)
        self.series_name, self.column, self.log_scale, self.unit = series, column, log, unit

    def configure(self, title: str, series: str, column: str, log: bool = False,
                  unit: bool = False) -> None:
        self.TITLE = self.border_title = title
        self.series_name, self.column, self.log_scale, self.unit = series, column, log, unit

    def plot(self, ctx: CompareContext) -> str:  # type: ignore[override]
        views = []
        for h, marker, color in ctx.runs:
            if h.has(self.series_name, self.column):
                v = h.query(self.series_name, ctx.x0, ctx.x1, self.npts(), [S.STEP, self.column])
                if len(v):
                    views.append((v, marker, color))
        log = self.log_scale and ctx.log_y
        floor = None
        if log and views:
            floor = self.log_floor(*(v.mn[:, 1] for v, _, _ in views))
        for v, marker, color in views:
            self.curve(v, self.column, marker, color, ctx.smoothing, floor)
        if self.points and log:
            self.set_log()
        if self.points and self.unit:
            self.set_ylim(0, 1)
        runs = f"{len(views)} run{'s' if len(views) != 1 else ''}"
        return f"{runs}  {'log-y' if log else ''}".rstrip() if self.log_scale else runs
