"""Updates/s of the hand-fused PyTorch step vs the C kernel step on the spiral (one thread),
and the kernel's compile time with a cold and a warm cache.

    .venv/bin/python bench/kernel_step.py [--steps 20000] [--dtype float64|float32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from dlf_tui.core import config
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine import models
from dlf_tui.engine import data as datamod
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine.steps.fused import FusedMLPStep

CHUNK = 2048  # the trainer's chunk (run.flush_every)


def compile_times() -> None:
    saved = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            t0 = time.perf_counter()
            ckernel.build(2, 3)
            t1 = time.perf_counter()
            _, flags = ckernel.build(2, 3)
            t2 = time.perf_counter()
        finally:
            if saved is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = saved
    print(f"compile: cold {t1 - t0:.2f} s, warm (cache hit) {1e3 * (t2 - t1):.1f} ms  [{flags}]")


def rate(cls, dtype: torch.dtype, steps: int) -> float:
    cfg = config.Config()
    dev = torch.device("cpu")
    data = datamod.load(cfg.data, dev, dtype)
    model = models.build(cfg.model, 2, 3, cfg.run.seed, dev, dtype)
    st = cls(cfg, model, data, CHUNK)
    sched = Schedule.create("triangle", 70, 5000, 3, cfg.run.steps, True)
    done, best = 0, 0.0
    while done < steps:  # per chunk, as the trainer does; the best chunk's rate (noisy machines)
        k = min(CHUNK, steps - done)
        gam = sched.table(k)[0]
        sched.advance(k)
        st.begin_chunk(torch.as_tensor(gam, dtype=dtype))
        t0 = time.perf_counter()
        for i in range(k):
            st.step(i)
        st.buf[:k].cpu()
        best = max(best, k / (time.perf_counter() - t0))
        done += k
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    compile_times()
    status = ckernel.load_kernel()
    if status.lib is None:
        raise SystemExit(f"kernel unavailable: {status.reason}")
    dtype = getattr(torch, args.dtype)
    r_fused = rate(FusedMLPStep, dtype, args.steps)
    r_kern = rate(ckernel.CKernelMLPStep, dtype, args.steps)
    print(f"{args.dtype}, {args.steps} updates, 1 thread (best chunk of {CHUNK}):")
    print(f"  FusedMLPStep    {r_fused:9,.0f} updates/s")
    print(f"  CKernelMLPStep  {r_kern:9,.0f} updates/s  ({r_kern / r_fused:.1f}x)")


if __name__ == "__main__":
    main()
