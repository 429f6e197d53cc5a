"""``dlf-tui sweep``: the sweep engine in its own process, followed from this one.

The sweep directory is the truth: about every second (less often for sweeps of
thousands of members, see ``BUSY``) this process reads the members' files
(``Sweep.progress()`` / ``Sweep.summary()``) and shows, on a TTY, a progress
line (member-updates done/total, rate, ETA, members finished) above a live
summary table; otherwise a plain line every few seconds.  At the end the
full table is printed.  Ctrl-C asks the engine to stop (SIGTERM to the pid in
the sweep's ``state.json``) and waits for it; a second Ctrl-C stops waiting.
No torch here.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dlf_tui.core import states
from dlf_tui.core.errors import printable
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps
from dlf_tui.store import liveness


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until engine process ``pid`` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while liveness.engine_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------
# What is shown
# ---------------------------------------------------------------------------


def _pm(s: dict[str, Any] | None) -> tuple[str, str]:
    """('mean ± std', 'k/n ≥ threshold') of a sweeps.stats() dict; blanks without data."""
    if not s or not s["n"]:
        return "", ""
    return f"{s['mean']:.3f} ± {s['std']:.3f}", sweeps.above(s)


def summary_table(sweep: sweeps.Sweep, rows: list[dict[str, Any]],
                  max_rows: int | None = None) -> Table:
    """One row per cell: axis values, seeds done, latest update, mean ± std of the
    final train (and validation) accuracy and the fraction of seeds ≥ threshold."""
    thr = f"≥{sweep.threshold:g}"
    val = any(r["val"] for r in rows)
    t = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    names = [a.short for a in sweep.axes] + ["done", "update", "train acc", thr]
    names += ["val acc", f"val {thr}"] if val else []
    for name in names:
        t.add_column(name, justify="right", no_wrap=True)
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[:max(1, max_rows - 1)]
    for r in shown:
        cells = [sweeps.slug(v) for v in r["cell"]]
        cells += [f"{r['finished']}/{r['seeds']}", str(r["step"] or "")]
        cells += list(_pm(r["train"]))
        if val:
            cells += list(_pm(r["val"]))
        t.add_row(*cells)
    if len(shown) < len(rows):
        t.add_row(f"… {len(rows) - len(shown)} more cells")
    return t


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Rate:
    """Member-updates per second over the last ``window`` seconds."""

    def __init__(self, window: float = 10.0):
        self.window = window
        self.samples: list[tuple[float, int]] = []

    def add(self, t: float, done: int) -> float:
        self.samples.append((t, done))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window:
            self.samples.pop(0)
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


class Snapshot:
    """One reading of the sweep directory."""

    def __init__(self, sweep: sweeps.Sweep, rate: _Rate):
        self.sweep = sweep
        self.done, self.total = sweep.progress()
        self.rows = sweep.summary()
        self.state = sweep.state()
        if self.state.get("state") == runs.UNKNOWN:  # no state.json yet: the engine is importing torch
            self.state = {"state": states.STARTING}
        self.finished = sum(r["finished"] for r in self.rows)
        self.rate = rate.add(time.monotonic(), self.done)

    @property
    def eta(self) -> float:
        return (self.total - self.done) / self.rate if self.rate > 0 else math.nan

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 0.0
        mode = self.state.get("mode")
        return (f"{self.state.get('state', states.STARTING):<8} {pct:5.1f}%  "
                f"{self.done:,}/{self.total:,} member-updates  "
                f"{self.finished}/{len(self.sweep.members)} members finished  "
                f"{self.rate:,.0f} upd/s  ETA {_eta(self.eta)}"
                + (f"  [{mode}]" if mode else ""))

    def renderable(self, height: int) -> Group:
        """Two status lines above the summary table, cut to ``height`` lines."""
        pct = 100.0 * self.done / self.total if self.total else 0.0
        bar = Table.grid(padding=(0, 1))
        bar.add_row(Text(self.state.get("state", states.STARTING), style="bold"),
                    ProgressBar(total=max(1, self.total), completed=self.done, width=30),
                    Text(f"{pct:5.1f}%  {self.done:,}/{self.total:,} member-updates"))
        mode = self.state.get("mode")
        info = Text(f"members {self.finished}/{len(self.sweep.members)} finished  "
                    f"{self.rate:,.0f} upd/s  ETA {_eta(self.eta)}" + (f"  ({mode})" if mode else ""),
                    style="dim")
        return Group(bar, info, summary_table(self.sweep, self.rows, max_rows=max(3, height - 5)))


# ---------------------------------------------------------------------------
# Following
# ---------------------------------------------------------------------------


def print_plan(sweep: sweeps.Sweep) -> None:
    cells = len(sweep.cells())
    print(f"sweep {sweep.id}: {sweep.preset}, {cells} cell{'s' * (cells != 1)} × "
          f"{len(sweep.seeds)} seed{'s' * (len(sweep.seeds) != 1)} = {len(sweep.members)} members "
          f"(threshold {sweep.threshold:g}) -> {sweep.path}", flush=True)
    for a in sweep.axes:
        print(f"  {a.key}: {', '.join(sweeps.slug(v) for v in a.values)}", flush=True)
    print(f"  seeds: {', '.join(map(str, sweep.seeds))}", flush=True)


# Reading thousands of members' files takes time and the engine needs the cores:
# wait at least BUSY times as long as a reading took before the next one.
BUSY = 4.0


def follow(sweep: sweeps.Sweep, proc: Any, interval: float = 1.0, plain_every: float = 5.0) -> int:
    """Follow a sweep engine until it exits; returns the exit code (0 finished or
    stopped, 1 crashed, 2 when the engine refused its input)."""
    tty = sys.stdout.isatty()
    console = Console() if tty else Console(width=200)  # a log file: never wrap table rows
    t0 = time.monotonic()
    rate = _Rate()
    stopping = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: stop waiting, the engine still stops itself
            raise KeyboardInterrupt
        stopping = True
        sweep.stop(proc)
        print("stopping the sweep (Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        if tty:
            with Live(console=console, auto_refresh=False, transient=True) as live:
                while proc.poll() is None:
                    t = time.monotonic()
                    snap = Snapshot(sweep, rate)
                    live.update(snap.renderable(console.size.height), refresh=True)
                    _sleep(proc, max(interval, BUSY * (time.monotonic() - t)))
        else:
            next_line = 0.0
            while proc.poll() is None:
                t = time.monotonic()
                if t >= next_line:
                    print(Snapshot(sweep, rate).line(), flush=True)
                    next_line = t + max(plain_every, BUSY * (time.monotonic() - t))
                _sleep(proc, min(interval, max(0.0, next_line - time.monotonic())))
    except KeyboardInterrupt:
        print(f"stopped waiting; the engine is still stopping (see `dlf-tui sweeps`): {sweep.path}",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    code = proc.wait()
    return finish(sweep, code, time.monotonic() - t0, console)


def _sleep(proc: Any, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when the engine exits."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def finish(sweep: sweeps.Sweep, code: int, wall: float, console: Console | None = None) -> int:
    """Print the final summary; returns the command's exit code."""
    console = console or Console(width=200)
    st = sweep.state()
    state = st.get("state", runs.UNKNOWN)
    rows = sweep.summary()
    done = sum(r["finished"] for r in rows)
    rate = st.get("rate")
    print(f"\n{state}: {sweep.id}  ({wall:.1f} s wall, {done}/{len(sweep.members)} members finished"
          + (f", {rate:,.0f} member-updates/s" if isinstance(rate, (int, float)) and rate else "")
          + ")", flush=True)
    ok = state in (states.FINISHED, states.STOPPED) and code == 0
    if not ok:
        reason = launch.engine_failure(runs.Run(sweep.path)) or f"engine exited with status {code}"
        print(f"error: {printable(reason)}", file=sys.stderr, flush=True)
    console.print(summary_table(sweep, rows))
    print(f"  sweep directory: {sweep.path}", flush=True)
    if ok:
        return 0
    return 2 if code == 2 else 1
