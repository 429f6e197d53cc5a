"""Engine updates/s with the TUI attached vs. the same run headless (prints numbers).

    .venv/bin/python bench/ui_overhead.py [--config fig4|tiny] [--seconds 10] [--size 160x48]

For each mode a fresh run is started (`launch.spawn_run_engine`); after a warm-up the
rows written per second are measured over ``--seconds``.  "tui" attaches a
real ``DlfApp`` (headless, at ``--size``) in this process for the whole
measurement: event pump, history, timed chart redraws.  Modes alternate
(headless, tui, headless, tui) so drifting machine load hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlf_tui.core import config
from dlf_tui.store import launch  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402

CONFIGS = {
    # the paper's Fig. 4 run (float64, width 100) on a CPU core
    "fig4": ["run.device=cpu"],
    # a tiny float32 run: the most updates a second, the worst case for the UI's pipeline
    "tiny": ["model.hidden=[16]", "data.points_per_class=30", "schedule.period=200",
             "run.dtype=float32", "run.device=cpu"],
}


def start(kind: str, runs_dir: Path):
    cfg = config.apply_overrides(config.Config(name=f"bench-{kind}"),
                                 ["run.steps=100000000", *CONFIGS[kind]])
    run = runs.create_run(cfg, runs_dir)
    proc = launch.spawn_run_engine(run)
    launch.wait_until_listening(run, proc)
    return run, proc


def stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except Exception:  # noqa: BLE001
        os.killpg(proc.pid, signal.SIGKILL)


async def measure(run: runs.Run, warm: float, seconds: float, size, tui: bool) -> tuple[float, str]:
    note = ""
    if tui:
        from dlf_tui.ui.app import DlfApp

        app = DlfApp(runs_dir=run.path.parent, attach=run)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(warm)
            r0, t0, c0 = run.rows(), time.monotonic(), time.process_time()
            redraws0 = app.dashboard.redraws
            await asyncio.sleep(seconds)
            r1, t1, c1 = run.rows(), time.monotonic(), time.process_time()
            note = (f"TUI process CPU {100 * (c1 - c0) / (t1 - t0):.0f} % of a core, "
                    f"{(app.dashboard.redraws - redraws0) / (t1 - t0):.1f} redraws/s, "
                    f"UI holds {app.session.history.rows:,} rows")
    else:
        await asyncio.sleep(warm)
        r0, t0 = run.rows(), time.monotonic()
        await asyncio.sleep(seconds)
        r1, t1 = run.rows(), time.monotonic()
    return (r1 - r0) / (t1 - t0), note


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), default="fig4")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", default="160x48")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    tmp = Path(tempfile.mkdtemp())
    rates: dict[str, list[float]] = {"headless": [], "tui": []}
    print(f"config {a.config}, {a.seconds:g} s per measurement, terminal {a.size}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for _ in range(a.rounds):
        for mode in ("headless", "tui"):
            run, proc = start(a.config, tmp)
            try:
                rate, note = asyncio.run(measure(run, a.warm, a.seconds, size, mode == "tui"))
            finally:
                stop(proc)
            rates[mode].append(rate)
            print(f"  {mode:>8}: {rate:>10,.0f} updates/s  {note}")
    h, t = statistics.median(rates["headless"]), statistics.median(rates["tui"])
    print(f"median: headless {h:,.0f}/s, with the TUI {t:,.0f}/s = {100 * t / h:.1f} % of headless")


if __name__ == "__main__":
    main()
