"""Final training accuracy of spiral-fig4 (A = 70) vs spiral-static (A = 1) over seeds.

    python bench/seeds.py --seeds 0 1 2 3 4

Which loss wins depends on the initial weights (DESIGN §3): this prints every run
and the mean ± std per preset, from the runs' own metrics files.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dlf_tui.store import run as runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=["spiral-fig4", "spiral-static"])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    results: dict[str, list[float]] = {p: [] for p in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for seed in args.seeds:
                d = Path(tmp) / f"{preset}-{seed}"
                cmd = [sys.executable, "-m", "dlf_tui", "run", preset, "--runs-dir", str(d),
                       "--set", f"run.seed={seed}", "--set", "run.device=cpu"]
                for s in args.sets:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True, capture_output=True)
                [run] = runs.list_runs(d)
                last = run.last_row()
                results[preset].append(last["accuracy"])
                print(f"{preset:14s} seed {seed}: final train accuracy {last['accuracy']:.4f} "
                      f"(CE {last['loss_ce']:.4f}, {run.state()['rate']:,.0f} updates/s)", flush=True)
    for preset, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{preset:14s} mean {statistics.mean(accs):.4f} ± {sd:.4f} over {len(accs)} seeds; "
              f"≥ 0.95: {sum(a >= 0.95 for a in accs)}/{len(accs)}")


if __name__ == "__main__":
    main()
