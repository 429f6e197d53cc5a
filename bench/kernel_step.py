"""Updates/s of the hand-fused PyTorch step vs the C kernel step (one thread): on the
spiral (2 inputs, 3 classes, 300 samples), then on MNIST-1D-shaped data (4000 samples,
40 inputs, 10 classes; random, or the real set with --mnist1d) for both losses and both
dtypes; and the kernel's compile time with a cold and a warm cache.

    .venv/bin/python bench/kernel_step.py [--steps 20000] [--dtype float64|float32]
        [--mnist1d] [--hidden 100] [--mnist1d-steps 400] [--no-spiral]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from dataclasses import replace

import torch

from dlf_tui.core import config
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine import models
from dlf_tui.engine import data as datamod
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.steps.fused import FusedMLPStep

CHUNK = 2048  # the trainer's chunk (run.flush_every)
M1D_CHUNK = 64  # MNIST-1D-sized updates are ~1000x slower: shorter chunks, same best-chunk rule


def compile_times(features: int = 2, classes: int = 3) -> None:
    saved = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            t0 = time.perf_counter()
            ckernel.build(features, classes)
            t1 = time.perf_counter()
            _, flags = ckernel.build(features, classes)
            t2 = time.perf_counter()
        finally:
            if saved is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = saved
    print(f"compile (F={features}, C={classes}): cold {t1 - t0:.2f} s, warm (cache hit) "
          f"{1e3 * (t2 - t1):.1f} ms  [{flags}]")


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


def mnist1d_data(real: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x (4000, 40) float64, y, what it is): the real MNIST-1D training set, or random
    data of its shape (Gaussian inputs, uniform labels)."""
    if real:
        try:
            from dlf_tui.engine import mnist1d
        except ImportError:
            raise SystemExit("--mnist1d: no dlf_tui.engine.mnist1d here") from None
        s = mnist1d.generate()
        return torch.from_numpy(s.x_train), torch.from_numpy(s.y_train), "MNIST-1D"
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(4000, 40, generator=gen, dtype=torch.float64),
            torch.randint(0, 10, (4000,), generator=gen), "random data of MNIST-1D's shape")


def rate_m1d(cls, x: torch.Tensor, y: torch.Tensor, hidden: int, loss: str,
             dtype: torch.dtype, steps: int) -> tuple[float, str]:
    """(best chunk's updates/s, the kernel's design or "") on (x, y), Γ of a triangle schedule."""
    n, F = x.shape
    C = int(y.max()) + 1
    cfg = config.Config()
    cfg = replace(cfg, model=replace(cfg.model, hidden=(hidden,)), loss=replace(cfg.loss, kind=loss),
                  optim=replace(cfg.optim, lr=0.05))
    dev = torch.device("cpu")
    model = models.build(cfg.model, F, C, cfg.run.seed, dev, dtype)
    st = cls(cfg, model, Dataset(Split(x.to(dtype), y), None, C, F), M1D_CHUNK)
    sched = Schedule.create("triangle", 10, 200, C, steps, False)
    done, best = 0, 0.0
    while done < steps:
        k = min(M1D_CHUNK, steps - done)
        gam = sched.table(k)[0]
        sched.advance(k)
        st.begin_chunk(torch.as_tensor(gam, dtype=dtype))
        t0 = time.perf_counter()
        for i in range(k):
            st.step(i)
        st.buf[:k].cpu()
        best = max(best, k / (time.perf_counter() - t0))
        done += k
    return best, getattr(st, "design", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000, help="spiral updates per stepper")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="the spiral's")
    ap.add_argument("--mnist1d", action="store_true", help="the real MNIST-1D training set, not random data")
    ap.add_argument("--hidden", type=int, default=100, help="MNIST-1D MLP's hidden width")
    ap.add_argument("--mnist1d-steps", type=int, default=400, help="MNIST-1D updates per stepper")
    ap.add_argument("--no-spiral", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if not args.no_spiral:
        compile_times()
        status = ckernel.load_kernel()
        if status.lib is None:
            raise SystemExit(f"kernel unavailable: {status.reason}")
        dtype = getattr(torch, args.dtype)
        r_fused = rate(FusedMLPStep, dtype, args.steps)
        r_kern = rate(ckernel.CKernelMLPStep, dtype, args.steps)
        print(f"spiral, {args.dtype}, {args.steps} updates, 1 thread (best chunk of {CHUNK}):")
        print(f"  FusedMLPStep    {r_fused:9,.0f} updates/s")
        print(f"  CKernelMLPStep  {r_kern:9,.0f} updates/s  ({r_kern / r_fused:.1f}x)")
    if args.mnist1d_steps > 0:
        x, y, what = mnist1d_data(args.mnist1d)
        compile_times(x.shape[1], int(y.max()) + 1)
        status = ckernel.load_kernel(x.shape[1], int(y.max()) + 1)
        if status.lib is None:
            raise SystemExit(f"kernel unavailable: {status.reason}")
        print(f"{what}: N={x.shape[0]}, F={x.shape[1]}, C={int(y.max()) + 1}, hidden {args.hidden}, "
              f"{args.mnist1d_steps} updates, 1 thread (best chunk of {M1D_CHUNK}):")
        print(f"  {'':8}{'loss':5}{'FusedMLPStep':>14}{'CKernelMLPStep':>16}")
        for dtype in (torch.float64, torch.float32):
            for loss in ("ce", "mse"):
                r_fused, _ = rate_m1d(FusedMLPStep, x, y, args.hidden, loss, dtype, args.mnist1d_steps)
                r_kern, design = rate_m1d(ckernel.CKernelMLPStep, x, y, args.hidden, loss, dtype,
                                          args.mnist1d_steps)
                print(f"  {str(dtype)[6:]:8}{loss:5}{r_fused:10,.0f} u/s{r_kern:12,.0f} u/s"
                      f"  ({r_kern / r_fused:.1f}x, {design})")


if __name__ == "__main__":
    main()
