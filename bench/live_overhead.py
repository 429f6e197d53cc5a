"""Cost of dlf_tui.live.Run over the same loop with a bare DynamicalLoss (prints numbers).

    python bench/live_overhead.py                  # CPU, MNIST-1D-sized: 40 inputs, 10 classes, batch 100
    python bench/live_overhead.py --device cuda --shape 3,32,32 --batch 512   # CIFAR-shaped, on a GPU

The loop: an MLP (or, with --shape C,H,W, a small conv net) on random data of that
shape, SGD, mini-batches drawn on the device.  Each variant runs --steps updates
after --warmup, alternating bare and live --repeat times; the median is printed.
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


def loop(args, live: bool, runs_dir: str) -> float:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    X = torch.randn(args.samples, *shape, device=dev)
    Y = torch.randint(0, args.classes, (args.samples,), device=dev)
    model = model_for(shape, args.classes).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = DynamicalLoss(classes=args.classes, amplitude=10, period=500)
    gen = torch.Generator(device=dev).manual_seed(0)

    def one(loss_of) -> None:
        idx = torch.randint(0, args.samples, (args.batch,), device=dev, generator=gen)
        loss = loss_of(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(loss_of, after) -> float:
        for _ in range(args.warmup):
            one(loss_of)
            after()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            one(loss_of)
            after()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return args.steps / (time.perf_counter() - t0)

    if not live:
        return timed(loss_fn, loss_fn.step)
    with dlf_tui.live.Run(loss_fn, optimizer=opt, name="bench", runs_dir=runs_dir,
                          state={"model": model}) as run:
        return timed(run.loss, run.step)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="40")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rates = {"bare": [], "live": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            rates["bare"].append(loop(args, False, tmp))
            rates["live"].append(loop(args, True, tmp))
    bare, live = statistics.median(rates["bare"]), statistics.median(rates["live"])
    print(f"{args.device}, input {args.shape}, {args.classes} classes, batch {args.batch}, "
          f"{args.threads} thread(s): bare DynamicalLoss {bare:,.0f} updates/s, live.Run "
          f"{live:,.0f} updates/s: overhead {100 * (bare / live - 1):.1f} % "
          f"(median of {args.repeat}; all: bare {[round(r) for r in rates['bare']]}, "
          f"live {[round(r) for r in rates['live']]})")


if __name__ == "__main__":
    main()
