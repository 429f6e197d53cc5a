"""Chart redraw cost and TUI memory as the history grows (prints numbers).

    .venv/bin/python bench/ui_render.py [--updates 1000000] [--size 160x48]
    .venv/bin/python bench/ui_render.py --classes 100 --updates 100000 --eval-every 100
    .venv/bin/python bench/ui_render.py --compare   # also plotext's own helpers, interleaved

Feeds fake spiral-like metrics (3 classes by default; ``--classes 100`` for a
CIFAR-100-like run, ``--eval-every`` adds held-out evaluations) through the
UI's history store in engine-sized chunks, inside a headless dashboard, and
reports
  * the process RSS and the history store's size every tenth of the run (the
    store allocates a level when data reaches it and grows its rings up to
    a bound),
  * the time of one chart redraw (history query + plotext build + conversion
    to Textual strips) for each chart at the given terminal size and window,
    after all updates: its history queries alone ("query"), the wall-clock
    median, and the UI thread's CPU time (the
    number to trust on a machine shared with other work); with ``--compare``
    also the CPU time with plotext's own ``hd_group``/``get_matrix_data``
    (what plotext_adapter's fast helpers replace), measured alternately with the fast
    ones so both see the same machine load.
No engine and no torch are involved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.text import Text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.core import series as S  # noqa: E402
from dlf_tui.ui.session.base import RunSession  # noqa: E402
from dlf_tui.ui.widgets.charts.plotext_adapter import use_fast_plotext  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def chunk(start: int, n: int, rng: np.random.Generator, C: int = 3, T: int = 5000) -> np.ndarray:
    st = np.arange(start + 1, start + n + 1, dtype=np.float64)
    t = (st - 1) % (T + 1)
    c = ((st - 1) // (T + 1)) % C
    w = np.where(t < T / 2, 1 + t * 2 * 69 / T, 139 - t * 2 * 69 / T)
    g = np.repeat((C / (w + C - 1))[:, None], C, 1)
    g[np.arange(n), c.astype(int)] = C * w / (w + C - 1)
    ce = 0.9 * np.exp(-st / 2e5) + 0.02 + 0.01 * rng.random(n)
    f = ce * g.max(1)
    # many classes differ, so a ranking means something (3 keep the data the old numbers came from)
    skill = np.linspace(0.0, 0.3, C)[None, :] if C > 10 else 0.0
    acc = np.clip(1 - ce[:, None] - skill + 0.05 * rng.standard_normal((n, C)), 0, 1)
    return np.column_stack([st, f, ce, acc.mean(1), acc, g, np.full(n, 70.0), np.full(n, T),
                            np.ones(n), 0.1 * rng.random(n)])


def eval_rows(steps: np.ndarray, rng: np.random.Generator, C: int) -> np.ndarray:
    ce = 0.9 * np.exp(-steps / 2e5) + 0.05
    acc = np.clip(0.95 - ce[:, None] - np.linspace(0.0, 0.3, C)[None, :]
                  + 0.02 * rng.standard_normal((len(steps), C)), 0, 1)
    return np.column_stack([steps, ce, acc.mean(1), acc])


async def main(updates: int, size: tuple[int, int], reps: int, C: int, eval_every: int,
               compare: bool) -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "r").mkdir()
    run = runs.Run(tmp / "r")
    session = RunSession(run)
    session.history.setup(S.metric_columns(C), S.eval_columns(C) if eval_every else [])
    session.live, session.state, session.total = False, "running", updates
    session.timeline = session.timeline.start(5000, C)
    for k in range(5):
        session.timeline.edit(updates // 6 * (k + 1), {"amplitude": 50.0 + k})
    app = DlfApp(runs_dir=tmp)
    rng = np.random.default_rng(0)
    async with app.run_test(size=size) as pilot:
        app.session = session

        dash = app._new_dashboard(session)
        await app.push_screen(dash)
        await pilot.pause(0.2)
        print(f"terminal {size[0]}x{size[1]}, {C} classes, {updates:,} updates in chunks of 1,400 rows"
              + (f", an evaluation every {eval_every:,}" if eval_every else "")
              + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'updates':>10} {'RSS MB':>8} {'store MB':>9}")
        base = rss_mb()
        t0 = time.perf_counter()
        done = 0
        next_report = 0
        evals = 0
        while done < updates:
            n = min(1400, updates - done)
            session.history.add_metrics(done, chunk(done, n, rng, C))
            if eval_every:
                steps = np.arange((done // eval_every + 1) * eval_every, done + n + 1, eval_every, dtype=np.float64)
                if len(steps):
                    session.history.add_eval(evals, eval_rows(steps, rng, C))
                    evals += len(steps)
            done += n
            if done >= next_report:
                print(f"{done:>10,} {rss_mb():>8.1f} {session.history.nbytes() / 2**20:>9.1f}")
                next_report += updates // 10
        ingest = time.perf_counter() - t0
        print(f"ingest: {ingest:.2f} s for {updates:,} rows ({ingest / (updates / 1400) * 1e3:.2f} ms "
              f"per 1,400-row chunk); RSS grew {rss_mb() - base:+.1f} MB while feeding")
        session.step = done
        query_ms = [0.0]
        plain_query = session.history.query

        def timed_query(*a, **kw):
            t = time.perf_counter()
            try:
                return plain_query(*a, **kw)
            finally:
                query_ms[0] += (time.perf_counter() - t) * 1e3

        session.history.query = timed_query  # the charts' history queries alone, per draw
        for window in ("whole", "period", "last"):
            dash.window = window
            ctx = dash.context()
            print(f"\nwindow: {dash.window_label()} (steps {ctx.x0:,.0f}..{ctx.x1:,.0f})")
            print(f"{'chart':>10} {'size':>7} {'points':>6} {'query':>8} {'query+setup':>12} {'build':>8} "
                  f"{'total':>8} {'CPU':>8}" + (f" {'CPU plotext-own':>16}" if compare else ""))
            for chart in dash.charts:
                if not chart.display or chart.size.width == 0:
                    continue
                totals, draws, builds, cpus, own, queries = [], [], [], [], [], []
                for _ in range(reps):
                    for fast in ((False, True) if compare else (True,)):
                        use_fast_plotext(fast)
                        chart._cache = None
                        t, c = time.perf_counter(), time.thread_time()
                        query_ms[0] = 0.0
                        chart.draw(ctx)
                        q = query_ms[0]
                        chart.rendered_strips()
                        cpu = (time.thread_time() - c) * 1e3
                        if not fast:
                            own.append(cpu)
                            continue
                        cpus.append(cpu)
                        queries.append(q)
                        totals.append((time.perf_counter() - t) * 1e3)
                        draws.append(chart.draw_ms)
                        builds.append(chart.build_ms)
                use_fast_plotext(True)
                print(f"{chart.id:>10} {chart.size.width:>3}x{chart.size.height:<3} {chart.points:>6} "
                      f"{statistics.median(queries):>6.2f}ms "
                      f"{statistics.median(draws):>10.2f}ms {statistics.median(builds):>6.2f}ms "
                      f"{statistics.median(totals):>6.2f}ms {statistics.median(cpus):>6.2f}ms"
                      + (f" {statistics.median(own):>14.2f}ms" if compare else "")
                      + (f"  {Text.from_markup(chart.border_subtitle).plain}" if chart.border_subtitle else ""))
        print(f"\nfinal RSS {rss_mb():.1f} MB (history store {session.history.nbytes() / 2**20:.1f} MB)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=1_000_000)
    ap.add_argument("--size", default="160x48")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=0, help="an evaluation every N updates (0: none)")
    ap.add_argument("--compare", action="store_true", help="also time plotext's own helpers")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    asyncio.run(main(a.updates, (w, h), a.reps, a.classes, a.eval_every, a.compare))
