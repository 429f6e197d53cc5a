"""One sweep engine for many seeds vs one `dlf-tui run` per seed, same work.

    python bench/ensemble.py                      # 16 seeds × A ∈ {1, 70} of spiral-fig4 = 32 members
    python bench/ensemble.py --steps 10000 --sequential 4 --modes threads,batched

Both sides train the spiral-fig4 runs with the landscape diagnostics off (the
sweep engine does not compute them).  The sequential side times whole
``dlf-tui run`` commands (process start, torch import, kernel load, training,
writing); ``--sequential N`` times N of the members and scales to all of them
(printed as such).  Prints wall times, member-updates/s and the ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlf_tui.core import config, presets
from dlf_tui.store import sweep as sweeps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="spiral-fig4")
    ap.add_argument("--steps", type=int, default=70000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--amplitudes", default="1,70")
    ap.add_argument("--modes", default="threads", help="sweep engine modes to time (comma list)")
    ap.add_argument("--sequential", type=int, default=32, help="how many single runs to time (0 = none)")
    args = ap.parse_args()
    base = config.apply_overrides(presets.find(args.preset),
                                  [f"run.steps={args.steps}", "diagnostics.enabled=false",
                                   "run.device=cpu"])
    plan = sweeps.plan(base, [f"schedule.amplitude={args.amplitudes}"], seeds=args.seeds)
    n = len(plan.members)
    work = n * args.steps
    print(f"{args.preset}: {n} members ({args.amplitudes} × {args.seeds} seeds) × {args.steps} "
          f"updates = {work:,} member-updates", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in [m for m in args.modes.split(",") if m]:
            sw = sweeps.create(plan, Path(tmp) / mode)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(sw.path),
                            "--mode", mode], check=True)
            dt = time.perf_counter() - t
            st = sw.state()
            assert st["state"] == "finished", st
            results[mode] = dt
            print(f"sweep engine, mode {mode:8s}: {dt:8.1f} s  ({work / dt:,.0f} member-updates/s, "
                  f"{st.get('threads')} threads)", flush=True)
        if args.sequential:
            k = min(args.sequential, n)
            t = time.perf_counter()
            for mid, _, seed, cfg in plan.members[:: max(1, n // k)][:k]:
                d = Path(tmp) / "seq" / mid
                cmd = [sys.executable, "-m", "dlf_tui", "run", args.preset, "--runs-dir", str(d),
                       "--set", f"run.steps={args.steps}", "--set", "diagnostics.enabled=false",
                       "--set", "run.device=cpu", "--set", f"run.seed={seed}",
                       "--set", f"schedule.amplitude={cfg.schedule.amplitude}"]
                subprocess.run(cmd, check=True, capture_output=True)
            dt = time.perf_counter() - t
            total = dt * n / k
            scaled = "" if k == n else f" (timed {k} runs: {dt:.1f} s, scaled ×{n / k:g})"
            print(f"sequential `dlf-tui run` × {n}: {total:8.1f} s{scaled}  "
                  f"({work / total:,.0f} member-updates/s)", flush=True)
            for mode, t_ in results.items():
                print(f"ratio sequential / {mode}: {total / t_:.2f}×")


if __name__ == "__main__":
    main()
