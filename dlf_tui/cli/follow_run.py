"""``dlf-tui run``: the engine in its own process, followed from this one.

On a TTY a rich progress bar (updates/s, ETA, F, accuracy); otherwise one plain
line per period.  Ctrl-C asks the engine to stop (it checkpoints first) and
waits for it, so the run directory is always left readable.  No torch here.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dlf_tui.core import series
from dlf_tui.core.errors import ClientError, RunError
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.wire import protocol
from dlf_tui.wire.client import Client


class _Follower:
    def __init__(self, total: int, start_step: int, tty: bool, console: Console,
                 loss_column: str = series.LOSS_CE):
        self.total = total
        self.loss, self.label = loss_column, series.LOSS_LABEL[loss_column]  # CE or MSE
        self.tty = tty
        self.console = console
        self.step = start_step
        self.last: dict[str, float] = {}
        self.rate = 0.0
        self.next_line = None  # step at which the next plain line is due
        self.progress: Progress | None = None
        self.task = None
        self.silent = False  # the engine stopped answering (told the user once)

    def __enter__(self) -> "_Follower":
        if self.tty:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8} upd/s"), TimeRemainingColumn(),
                TextColumn("F {task.fields[F]}  " + self.label + " {task.fields[CE]}  acc {task.fields[acc]}"),
                console=self.console, transient=False, refresh_per_second=8)
            self.progress.__enter__()
            self.task = self.progress.add_task("training", total=self.total, completed=self.step,
                                               rate="-", F="-", CE="-", acc="-")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def metrics(self, msg: protocol.Metrics) -> None:
        if msg.rows == 0:
            return
        arr = msg.array()
        cols = msg.columns
        self.last = dict(zip(cols, (float(v) for v in arr[-1])))
        self.step = int(self.last[series.STEP])
        if self.progress is not None:
            self.progress.update(self.task, completed=self.step, rate=f"{self.rate:,.0f}",
                                 F=f"{self.last[series.LOSS_DYNAMICAL]:.4g}",
                                 CE=f"{self.last[self.loss]:.4g}",
                                 acc=f"{self.last[series.ACCURACY]:.3f}")
            return
        # plain output: one line per period (T+1 updates), and a first line early
        si, pi = cols.index(series.STEP), cols.index(series.PERIOD)
        for row in arr:
            s = int(row[si])
            if self.next_line is None:
                self.next_line = s + int(row[pi])
            if s >= self.next_line or s == self.total:
                self.next_line = s + int(row[pi]) + 1
                r = dict(zip(cols, (float(v) for v in row)))
                print(f"update {s}/{self.total}  period {math.ceil(s / (r[series.PERIOD] + 1))}  "
                      f"F {r[series.LOSS_DYNAMICAL]:.5g}  {self.label} {r[self.loss]:.5g}  "
                      f"acc {r[series.ACCURACY]:.3f}  {self.rate:,.0f} upd/s", flush=True)

    def silence(self, line: str) -> str:
        """Say once that the engine stopped answering (``line``, from ``Client.silence``),
        and once that it answers again; returns ``line``."""
        if line and not self.silent:
            self._say(f"[warning] {line} (Ctrl-C leaves it as it is)", err=True)
        elif self.silent and not line:
            self._say("[info] the engine responds again", err=True)
        self.silent = bool(line)
        return line

    def _say(self, text: str, err: bool = False) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    SHOWN = ("set", "static_tail", "diverged", "rollback", "edge_of_stability", "error")

    def log(self, msg: protocol.Log) -> None:
        if msg.level in ("warning", "error") or msg.kind in self.SHOWN:
            self._say(f"[{msg.level}] update {msg.step}: {msg.message}")


def run_headless(run: runs.Run, resume: bool = False, nproc: int = 1, fork: bool = False,
                 edits: dict | None = None) -> int:
    console = Console(stderr=False)
    tty = sys.stdout.isatty()
    proc = launch.spawn_run_engine(run, resume=resume, nproc=nproc, fork=fork, edits=edits)
    try:
        launch.wait_until_listening(run, proc)
        client = Client.connect(run.path)
    except (RunError, ClientError) as err:
        if proc.wait() == 0:  # a short run can be over before a client connects
            _summary(run, 0.0, False)
            return 0
        print(f"error: {err}", file=sys.stderr)
        return 2 if proc.returncode == 2 else 1
    hello = client.hello
    total = int(hello.params.get("total", 0))
    print(f"run {run.id}: {hello.config.get('name')} on {hello.params.get('device')}, "
          f"{total} updates -> {run.path}", flush=True)
    t0 = time.monotonic()
    interrupted = stuck = False

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: stop waiting, the engine still stops itself
            raise KeyboardInterrupt
        interrupted = True
        try:
            client.send("stop")
        except ClientError:
            pass

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with _Follower(total, hello.metrics_rows, tty, console,
                       series.plain_loss(list(hello.metrics_columns))) as f:
            while not client.closed:
                for msg in client.messages(timeout=1.0):
                    if f.silent:
                        f.silence("")  # it answers again
                    if isinstance(msg, protocol.Metrics):
                        f.metrics(msg)
                    elif isinstance(msg, protocol.State):
                        f.rate = msg.rate or f.rate
                    elif isinstance(msg, protocol.Log):
                        f.log(msg)
                stuck = bool(f.silence(client.silence()))
                if stuck and interrupted:  # asked to stop, and it cannot: do not wait on it
                    raise KeyboardInterrupt
    except (ClientError, KeyboardInterrupt) as err:
        if isinstance(err, ClientError):
            print(f"error: {err}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, old)
        client.close()
    try:
        code = proc.wait(timeout=1 if stuck else 60)
    except Exception:  # noqa: BLE001 - report and leave the engine to finish on its own
        print(f"engine pid {proc.pid} left running (it is not responding or still shutting "
              f"down); `dlf-tui runs` shows its state, `dlf-tui attach {run.id}` follows it",
              file=sys.stderr)
        return 1
    wall = time.monotonic() - t0
    _summary(run, wall, interrupted)
    return 0 if code == 0 else 1


def _summary(run: runs.Run, wall: float, interrupted: bool) -> None:
    st = run.state()
    last = run.last_row()
    lastv = run.last_row(series.EVAL)
    state = st.get("state", "?")
    print(f"\n{state}: {run.id}  ({wall:.1f} s wall, steady {st.get('rate', 0):,.0f} updates/s)")
    if st.get("reason"):
        print(f"  reason: {st['reason']}")
    if last:
        C = series.classes_of(list(last))
        loss = series.plain_loss(list(last))
        per = " ".join(f"{last[series.accuracy_class(i)]:.3f}" for i in range(C))
        print(f"  update {int(last[series.STEP])}/{st.get('total', '?')}: "
              f"F {last[series.LOSS_DYNAMICAL]:.5g}  {series.LOSS_LABEL[loss]} {last[loss]:.5g}  "
              f"accuracy {last[series.ACCURACY]:.4f}  (per class {per})")
    if lastv:
        vloss = series.plain_loss(list(lastv), held_out=True)
        print(f"  held-out at update {int(lastv[series.STEP])}: {series.LOSS_LABEL[vloss]} {lastv[vloss]:.5g}  "
              f"accuracy {lastv[series.VAL_ACCURACY]:.4f}")
    print(f"  run directory: {run.path}")
