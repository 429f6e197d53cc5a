"""What forks of one run cost when they train side by side.

    python bench/forks.py [--preset spiral-fig4] [--at 30000] [--forks 2]

Trains the preset once (the parent), then forks it ``--forks`` times at ``--at``
with different amplitudes, (a) one fork after another and (b) all at once (each
fork is its own engine process; the OS shares the cores).  Prints the wall time
of each way and the updates/s each engine reported.  Numbers, not assertions.
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

CLI = [sys.executable, "-m", "dlf_tui.cli.main"]


def dlf(*args: str, wait: bool = True) -> subprocess.Popen | None:
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"dlf-tui {' '.join(args)}: {err.strip()}")
        return None
    return proc


def rates(rdir: Path, skip: set[str]) -> list[float]:
    return [json.loads(r.file(runs.STATE).read_text()).get("rate", 0.0)
            for r in runs.list_runs(rdir) if r.id not in skip]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="spiral-fig4")
    ap.add_argument("--at", type=int, default=30000)
    ap.add_argument("--forks", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rdir = Path(tmp) / "runs"
        t = time.perf_counter()
        dlf("run", args.preset, "--device", "cpu", "--runs-dir", str(rdir))
        [parent] = runs.list_runs(rdir)
        print(f"parent {args.preset}: {time.perf_counter() - t:.1f} s wall, "
              f"{json.loads(parent.file(runs.STATE).read_text())['rate']:,.0f} updates/s")
        amps = [1.0 + 10 * i for i in range(args.forks)]
        for how in ("one after another", "all at once"):
            before = {r.id for r in runs.list_runs(rdir)}
            t = time.perf_counter()
            forks = [["fork", parent.id, "--at", str(args.at), "--set", f"schedule.amplitude={a}",
                      "--runs-dir", str(rdir)] for a in amps]
            if how == "one after another":
                for f in forks:
                    dlf(*f)
            else:
                procs = [dlf(*f, wait=False) for f in forks]
                for p in procs:
                    p.communicate()
            wall = time.perf_counter() - t
            r = rates(rdir, before)
            print(f"{args.forks} forks at update {args.at}, {how}: {wall:.1f} s wall; engines at "
                  + ", ".join(f"{v:,.0f}" for v in r) + " updates/s"
                  + f" ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
