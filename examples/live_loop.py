"""Your own training loop, watched and steered live from dlf-tui.

    python examples/live_loop.py                 # then, in another terminal: dlf-tui attach
    python examples/live_loop.py --steps 20000 --runs-dir /tmp/runs

A small MLP learns the 3-arm spiral with mini-batch SGD and a DynamicalLoss.
``dlf_tui.live.Run`` records every update into a run directory and serves its
control socket: ``dlf-tui attach`` draws it live, and A, T, lr, pause, stop and
checkpoint from the dashboard (or ``dlf-tui ctl RUN set amplitude=5``) reach
this loop between two updates.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import dlf_tui
from dlf_tui import DynamicalLoss
from dlf_tui.engine.data import make_spiral


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--name", default="live-spiral")
    ap.add_argument("--resume", action="store_true", help="continue the latest run of --name")
    args = ap.parse_args()

    torch.manual_seed(0)
    x, y = make_spiral(200, 3, 2.0, 0.2, 0)
    X, Y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    xv, yv = make_spiral(100, 3, 2.0, 0.2, 1)
    Xv, Yv = torch.as_tensor(xv, dtype=torch.float32), torch.as_tensor(yv)
    model = nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = DynamicalLoss(classes=3, amplitude=10, period=1000, total_steps=args.steps)
    gen = torch.Generator().manual_seed(0)

    with dlf_tui.live.Run(loss_fn, optimizer=opt, name=args.name, state={"model": model},
                          runs_dir=args.runs_dir, steps=args.steps,
                          resume="latest" if args.resume else None,
                          config={"batch": 100, "hidden": 100}) as run:
        print(f"run {run.dir}", flush=True)
        while run.steps_done < args.steps:
            idx = torch.randint(0, X.shape[0], (100,), generator=gen)
            loss = run.loss(model(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if not run.step():
                break
            if run.should_evaluate():
                with torch.no_grad():
                    run.log_eval(model(Xv), Yv)
            if run.steps_done % 5000 == 0:
                print(f"update {run.steps_done}: F {loss.item():.4f}", flush=True)
        print(f"done after {run.steps_done} updates", flush=True)


if __name__ == "__main__":
    main()
