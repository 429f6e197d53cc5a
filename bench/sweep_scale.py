"""Member-updates/s of a sweep of spiral-fig4 members: the one-process sweep engine in a
given mode (``batched``: one stacked step on a GPU; ``threads``: the CPU thread pool),
or members spread over devices (``--devices``: one engine per member, one member per
device at a time).

    python bench/sweep_scale.py --members 1024 --steps 2000 --device cuda --mode batched
    python bench/sweep_scale.py --members 256 --steps 2000 --device cpu --mode threads
    python bench/sweep_scale.py --members 8 --steps 20000 --devices cuda:0,cuda:1
    python bench/sweep_scale.py --members 4 --steps 60000 --devices cpu,cpu     # CPU smoke

Prints one line: members, updates, wall (the whole process: start, torch import,
training, writing), the engine's own member-updates/s, and wall member-updates/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlf_tui.core import config, presets  # noqa: E402
from dlf_tui.store import sweep as sweeps  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="spiral-fig4")
    ap.add_argument("--members", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--device", default="cpu", help="run.device of every member (engine modes)")
    ap.add_argument("--mode", default="auto", help="the one-process engine's mode (auto, batched, threads, vmap)")
    ap.add_argument("--devices", default="", help="one member per device at a time instead (e.g. cuda:0,cuda:1)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    amps = [1, 70]
    seeds = max(1, args.members // len(amps))
    device = "auto" if args.devices else args.device
    base = config.apply_overrides(presets.find(args.preset), [
        f"run.steps={args.steps}", "diagnostics.enabled=false", f"run.device={device}",
        "run.checkpoint_every=0"])
    plan = sweeps.plan(base, [f"schedule.amplitude={','.join(map(str, amps))}"], seeds=seeds)
    n = len(plan.members)
    ex = sweeps.executor_spec(None, args.devices or None) if args.devices else None
    tmp = Path(tempfile.mkdtemp(prefix="dlf-sweep-scale-"))
    sw = sweeps.create(plan, tmp, executor=ex)
    cmd = [sys.executable, "-m", "dlf_tui.engine", str(sw.path)]
    if not args.devices:
        cmd += ["--mode", args.mode]
    t = time.perf_counter()
    code = subprocess.run(cmd).returncode
    wall = time.perf_counter() - t
    st = json.loads((sw.path / "state.json").read_text())
    work = n * args.steps
    what = f"--devices {args.devices}" if args.devices else f"mode {st.get('mode')} on {args.device}"
    print(f"{args.preset}: {n} members × {args.steps} updates, {what}: wall {wall:.1f} s, "
          f"engine {st.get('rate', 0):,.0f} member-updates/s, wall {work / wall:,.0f} member-updates/s "
          f"[{st.get('state')}{': ' + st['reason'] if st.get('reason') else ''}]", flush=True)
    if args.keep:
        print(f"kept {sw.path}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
