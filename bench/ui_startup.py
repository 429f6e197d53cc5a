"""Time from `python` start to the TUI's first frame (prints seconds).

    .venv/bin/python bench/ui_startup.py [--repeat 5]

Runs a fresh interpreter per measurement (headless, so no terminal is
needed): picker mode, and attach to a finished run with 100k fake updates.
The UI never imports torch, so this is imports + Textual start-up + layout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = r"""
import time, sys
t0 = time.perf_counter()
from pathlib import Path
from dlf_tui.store import run as runs
from dlf_tui.ui.app import DlfApp
mode, runs_dir = sys.argv[1], Path(sys.argv[2])
attach = runs.resolve(None, runs_dir) if mode == "attach" else None

class Timed(DlfApp):
    first = None

    def on_mount(self):
        super().on_mount()
        def painted():
            if self.first is None:
                self.first = time.perf_counter() - t0
                self.first_cpu = time.process_time()
            d = self.dashboard
            if mode == "attach" and (d is None or not all(
                    c.has_data for c in d.charts if c.display and c.id != "sharpness")):
                self.set_timer(0.01, painted)
                return
            print(f"{self.first:.3f} {time.perf_counter() - t0:.3f} {self.first_cpu:.3f}",
                  "torch" in sys.modules)
            self.exit()
        self.call_after_refresh(painted)

Timed(runs_dir=runs_dir, attach=attach).run(headless=True, size=(120, 40))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from test_ui_support import fake_run

    tmp = Path(tempfile.mkdtemp())
    fake_run(tmp / "runs", steps=100_000, period=5000)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for mode in ("picker", "attach"):
        firsts, drawn, cpus = [], [], []
        for _ in range(a.repeat):
            out = subprocess.run([sys.executable, "-c", CODE, mode, str(tmp / "runs")], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
            first, done, cpu, torch = out.stdout.split()
            cpus.append(float(cpu))
            assert torch == "False", "the UI imported torch"
            firsts.append(float(first))
            drawn.append(float(done))
        print(f"{mode}: first frame median {statistics.median(firsts):.2f} s "
              f"(min {min(firsts):.2f}, max {max(firsts):.2f}, n={len(firsts)}; "
              f"CPU time to it {statistics.median(cpus):.2f} s)"
              + (f"; charts drawn from 100k updates on disk: median {statistics.median(drawn):.2f} s"
                 if mode == "attach" else ""))


if __name__ == "__main__":
    main()
