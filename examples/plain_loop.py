"""A plain PyTorch training loop with a dynamical loss (no dlf-tui engine, no TUI).

    python examples/plain_loop.py

A small MLP learns the 3-arm spiral with mini-batch Adam; the loss weights each
class by Γ_i(t), emphasising one class at a time (A = 10, a period of 1,001
updates), and the last period is plain cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from dlf_tui import DynamicalLoss
from dlf_tui.engine.data import make_spiral

STEPS = 3000


def main() -> None:
    torch.manual_seed(0)
    x, y = make_spiral(200, 3, 2.0, 0.2, 0)  # 3 arms × 200 points, 2-d
    X, Y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    model = nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                          nn.Linear(100, 3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = DynamicalLoss(classes=3, amplitude=10, period=1000,
                            last_period_static=True, total_steps=STEPS)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, STEPS + 1):
        idx = torch.randint(0, X.shape[0], (100,), generator=gen)
        logits = model(X[idx])
        loss = loss_fn(logits, Y[idx])  # F = mean over samples of Γ[label]·CE
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:  # F with this update's Γ, A; CE and accuracy after it
            with torch.no_grad():
                full = model(X)
                ce = nn.functional.cross_entropy(full, Y).item()
                acc = (full.argmax(1) == Y).float().mean().item()
            print(f"update {step}: F {loss.item():.4f}  CE {ce:.4f}  accuracy {acc:.3f}  "
                  f"Γ {[round(g, 3) for g in loss_fn.gamma_host.tolist()]}  A {loss_fn.amplitude:g}")
        loss_fn.step()  # one update done: the schedule moves on
    with torch.no_grad():
        acc = (model(X).argmax(1) == Y).float().mean().item()
    print(f"final accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
