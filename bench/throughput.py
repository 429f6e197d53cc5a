"""Engine throughput on a preset, headless, every per-update metric written to disk.

    python bench/throughput.py                       # the full 70,000-update spiral-fig4, float64
    python bench/throughput.py --steps 20000 --set run.fused=false   # the autograd path

Prints the engine's steady rate (updates/s after the first chunk, from state.json), the
whole command's wall time (process start, torch import, training, checkpoint, summary),
and the size of what was written.  Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlf_tui.store import run as runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="spiral-fig4")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "dlf_tui", "run", args.preset, "--runs-dir", tmp,
                   "--set", "run.device=cpu"]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            for s in args.sets:
                cmd += ["--set", s]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if out.returncode:
                sys.exit(f"failed: {out.stderr.strip()}")
            [run] = [p for p in Path(tmp).iterdir() if p.is_dir()]
            st = json.loads((run / "state.json").read_text())
            size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
            kernel = ""
            for line in (run / "engine.log").read_text().splitlines():
                if "stepper" in line:
                    kernel = line.split("] ", 1)[-1]
            diag = ""
            r = runs.Run(run)
            if r.rows("diag"):
                d = r.read("diag")
                spent = float(d[:, r.columns("diag").index("seconds")].sum())
                busy = st["step"] / st["rate"]  # training + diagnostics time
                diag = (f"; diagnostics {len(d)} calls, {spent:.2f} s = {100 * spent / busy:.1f} % of "
                        f"the run, training alone {st['step'] / max(busy - spent, 1e-9):,.0f} updates/s")
            print(f"{args.preset} {' '.join(args.sets)}: {st['step']} updates, steady "
                  f"{st['rate']:,.0f} updates/s, whole command {wall:.1f} s wall, "
                  f"run dir {size / 1e6:.1f} MB{diag} [{kernel.split(' INFO ')[-1]}]", flush=True)


if __name__ == "__main__":
    main()
