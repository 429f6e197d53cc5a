"""Cost of dlf_tui.live.Run over the same loop with a bare DynamicalLoss (prints numbers).

    python bench/live_overhead.py                  # CPU, MNIST-1D-sized: 40 inputs, 10 classes, batch 100
    python bench/live_overhead.py --device cuda --shape 3,32,32 --batch 512   # CIFAR-shaped, on a GPU

The loop: an MLP (or, with --shape C,H,W, a small conv net) on random data of that
shape, SGD, mini-batches drawn on the device.  Two such loops live in one process,
one with a bare DynamicalLoss and one inside a live.Run, and train in alternating
blocks of --block updates (--blocks pairs after --warmup updates each), so that a
machine whose speed drifts (a shared VM's does, by 10 % and more between runs)
slows both alike.  Printed: the median time per update of each, and the overhead
as the median and the quartiles of the per-pair ratios.  A block of 2048 updates
holds two to four of the live run's flushes (every 0.5 s), so each block pays them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn

import dlf_tui
from dlf_tui import DynamicalLoss


def model_for(shape: tuple[int, ...], classes: int) -> nn.Module:
    if len(shape) == 1:
        return nn.Sequential(nn.Linear(shape[0], 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                             nn.Linear(100, classes))
    c = shape[0]
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, classes))


class Loop:
    """One training loop of the bench (its own model, optimizer, loss and data)."""

    def __init__(self, args):
        torch.manual_seed(0)
        self.args, self.dev = args, torch.device(args.device)
        dev = self.dev
        shape = tuple(int(v) for v in args.shape.split(","))
        self.X = torch.randn(args.samples, *shape, device=dev)
        self.Y = torch.randint(0, args.classes, (args.samples,), device=dev)
        self.model = model_for(shape, args.classes).to(dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.loss_fn = DynamicalLoss(classes=args.classes, amplitude=10, period=500)
        self.gen = torch.Generator(device=dev).manual_seed(0)
        self.loss_of, self.after = self.loss_fn, self.loss_fn.step

    def updates(self, n: int) -> float:
        """Seconds for ``n`` updates."""
        a, loss_of, after, model, opt = self.args, self.loss_of, self.after, self.model, self.opt
        sync = torch.cuda.synchronize if self.dev.type == "cuda" else (lambda: None)
        sync()
        clock = time.process_time if self.args.clock == "cpu" else time.perf_counter
        t0 = clock()
        for _ in range(n):
            idx = torch.randint(0, a.samples, (a.batch,), device=self.dev, generator=self.gen)
            loss = loss_of(model(self.X[idx]), self.Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            after()
        sync()
        return clock() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="40")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time (all its threads; the CPU only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bare, live = Loop(args), Loop(args)
    times: dict[str, list[float]] = {"bare": [], "live": []}
    with tempfile.TemporaryDirectory() as tmp, dlf_tui.live.Run(
            live.loss_fn, optimizer=live.opt, name="bench", runs_dir=tmp,
            state={"model": live.model}) as run:
        live.loss_of, live.after = run.loss, run.step
        bare.updates(args.warmup)
        live.updates(args.warmup)
        for i in range(args.blocks):
            order = (("bare", bare), ("live", live)) if i % 2 == 0 else (("live", live), ("bare", bare))
            for name, lp in order:
                times[name].append(lp.updates(args.block) / args.block)
    ratios = sorted(lv / b for b, lv in zip(times["bare"], times["live"]))
    q = lambda f: 100 * (ratios[min(len(ratios) - 1, int(f * len(ratios)))] - 1)  # noqa: E731
    b_us, l_us = (1e6 * statistics.median(times[k]) for k in ("bare", "live"))
    print(f"{args.device}, input {args.shape}, {args.classes} classes, batch {args.batch}, "
          f"{args.threads} thread(s), {args.blocks} x {args.block} updates each, {args.clock} "
          f"clock: bare DynamicalLoss {b_us:.1f} us/update, live.Run {l_us:.1f} us/update; overhead per pair: median "
          f"{100 * (statistics.median(ratios) - 1):.1f} %, quartiles {q(0.25):.1f} .. {q(0.75):.1f} %")


if __name__ == "__main__":
    main()
