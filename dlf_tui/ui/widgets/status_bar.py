"""The status bar: run id, preset, device, state, step/total, updates/s, ETA,
the pace when one is set, period number, emphasised class, A, T, lr, the newest λ_max against the
optimiser's stability line, GPU memory and utilisation (a live CUDA run, with
NVML), and the chart view settings.  Segments wrap as whole words, so 80
columns shows all of them on two or three lines."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from dlf_tui.core.states import CRASHED, FINISHED, PAUSED, RUNNING, STARTING, STOPPED, STOPPING
from dlf_tui.ui import fmt

NOT_RESPONDING = "not responding"  # shown for a live engine that has gone silent (no beat)

STATE_STYLE = {RUNNING: "bold green", PAUSED: "bold yellow", STARTING: "bold cyan",
               STOPPING: "bold yellow", STOPPED: "bold magenta", FINISHED: "bold blue",
               CRASHED: "bold red", NOT_RESPONDING: "bold red reverse"}


@dataclass
class StatusInfo:
    run_id: str = ""
    preset: str = ""
    device: str = ""
    state: str = STARTING
    live: bool = False
    step: int = 0
    total: int = 0
    rate: float = 0.0
    pace: float = 0.0  # a set pace, updates per second (0: full speed, not shown)
    eta: float | None = None
    period_index: int = 0
    emphasized: int | None = None
    amplitude: float | None = None
    amplitude_now: float | None = None
    period: float | None = None
    lr: float | None = None
    window: str = "whole run"
    smoothing: str = "EMA off"
    log_y: bool = True
    lambda_max: float | None = None  # newest Hessian λ_max, when the run measures it
    edge: float | None = None  # the stability line's value now (None: the optimiser has none)
    edge_label: str = ""  # its name: 2/η, 2(1+β)/η
    gpu: str = ""  # "GPU 3.2/80 GiB 97%" (ui/gpu.py), "" when not known


class StatusBar(Widget):
    """Wraps its fields to the width it gets (its height follows: 1–3 lines)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.info = StatusInfo()
        self._shown = ""

    def show(self, info: StatusInfo) -> None:
        """Repaint only if the text changed; re-layout only if its line count did."""
        self.info = info
        text = self._text(self._width())
        if text.plain == self._shown:
            return
        lines_changed = text.plain.count("\n") != self._shown.count("\n")
        self._shown = text.plain
        self.refresh(layout=lines_changed)

    def _width(self) -> int:
        return max(20, self.content_size.width or 80)

    def get_content_height(self, container, viewport, width: int) -> int:
        return self._text(max(20, width)).plain.count("\n") + 1

    def render(self) -> Text:
        text = self._text(self._width())
        self._shown = text.plain
        return text

    def segments(self) -> list[Text]:
        i = self.info
        pct = f" {100 * i.step / i.total:.0f}%" if i.total else ""
        a = fmt.num(i.amplitude)
        if i.amplitude_now is not None and i.amplitude is not None and i.amplitude_now != i.amplitude:
            a += f" (now {fmt.num(i.amplitude_now)})"
        cls = "–" if i.emphasized is None else str(i.emphasized)
        style = STATE_STYLE.get(i.state, "bold")
        segs = [
            Text.assemble(("● ", style), (i.state.upper(), style)),
            Text(f"{fmt.count(i.step)}/{fmt.count(i.total)}{pct}"),
            Text(fmt.rate(i.rate)),
            *([Text.assemble(("pace ", "dim"), (fmt.rate(i.pace), "bold"))] if i.pace > 0 else []),
            Text.assemble(("ETA ", "dim"), fmt.duration(i.eta)),
            Text.assemble(("period ", "dim"), str(i.period_index or "–")),
            Text.assemble(("class ", "dim"), cls),
            Text.assemble(("A ", "dim"), (a, "bold")),
            Text.assemble(("T ", "dim"), (fmt.num(i.period), "bold")),
            Text.assemble(("lr ", "dim"), (fmt.num(i.lr), "bold")),
        ]
        if i.lambda_max is not None and i.edge:
            unstable = i.lambda_max > i.edge
            segs.append(Text.assemble(("λmax ", "dim"), (fmt.num(i.lambda_max), "bold red" if unstable else "bold"),
                                      (" > " if unstable else " < ", "dim"), (f"{i.edge_label} ", "dim"),
                                      fmt.num(i.edge)))
        elif i.lambda_max is not None:
            segs.append(Text.assemble(("λmax ", "dim"), (fmt.num(i.lambda_max), "bold")))
        if i.gpu:
            segs.append(Text(i.gpu))
        segs += [
            Text(i.run_id or "–", style="bold"),
            Text(i.preset or "–"),
            Text(i.device or "–"),
        ]
        if not i.live and i.state != STARTING:
            segs.append(Text("read-only", style="reverse"))
        segs += [Text(i.window, style="italic"), Text(i.smoothing, style="italic"),
                 Text("log-y" if i.log_y else "lin-y", style="italic")]
        return segs

    def _text(self, width: int) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        col = 0
        for seg in self.segments():
            n = seg.cell_len
            if col and col + 2 + n > width:
                out.append("\n")
                col = 0
            elif col:
                out.append("  ")
                col += 2
            out.append_text(seg)
            col += n
        return out
