"""What a live run records of each update of the user's loop, until a flush.

Per update it keeps references to device tensors it does not wait for — the
outputs, the targets, the samples' log p(y) (the loss's own, when it computed
them), the loss the loop trained on, optionally the gradient norm — and the Γ, A,
T and lr in force.  ``take()`` turns them into metric rows in a few batched ops and one
host transfer.
"""

from __future__ import annotations

import numpy as np
import torch

from dlf_tui.engine.loss import as_float, neg_sample_loss
from dlf_tui.engine.recorder import ChunkResult
from dlf_tui.engine.trainer import eval_rows, metric_rows


def class_stats(predicted: torch.Tensor, targets: torch.Tensor, log_p: torch.Tensor, C: int,
                rows: int = 1, which: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, 3·C) statistics [Σ −ℓ | correct | count, per class] of samples with these
    predicted classes, targets and per-sample −ℓ (``log_p``: log p(y) for CE); ``which``
    gives the row of each sample (all in row 0 without it)."""
    y = targets.reshape(-1).long()
    vals = torch.stack([log_p, (predicted.reshape(-1) == y).to(log_p.dtype),
                        torch.ones_like(log_p)], 1)
    out = torch.zeros(rows * C, 3, dtype=log_p.dtype, device=log_p.device)
    out.index_add_(0, y if which is None else which * C + y, vals)
    return out.view(rows, C, 3).transpose(1, 2).reshape(rows, 3 * C)


class UpdateLog:
    def __init__(self, classes: int, first_step: int = 0, loss: str = "ce"):
        self.C = classes
        self.loss = loss  # "ce" | "mse": what the per-sample −ℓ is
        self.reset(first_step)

    def reset(self, first_step: int) -> None:
        self.step0 = first_step  # the update before the first one held
        self.outputs: list[torch.Tensor] = []  # the logits, detached
        self.targets: list[torch.Tensor] = []
        self.neg_loss: list[torch.Tensor | None] = []
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor | None] = []
        self.host: list[tuple[np.ndarray, float, int, float]] = []  # Γ, A, T, lr per update
        self.evals: list[tuple[int, torch.Tensor]] = []

    @property
    def updates(self) -> int:
        """Updates complete in the log (their ``end_update`` was called)."""
        return len(self.host)

    def add_forward(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor,
                    neg_loss: torch.Tensor | None = None) -> None:
        """An update's forward: its outputs, targets, the loss it trained on, and the
        samples' −ℓ if the loss computed them (references only: no work here)."""
        self.outputs.append(logits.detach())  # its argmax is taken at the flush, for all at once
        self.targets.append(targets.detach())
        self.neg_loss.append(neg_loss)
        self.losses.append(loss.detach())

    def end_update(self, gamma: np.ndarray, amplitude: float, period: int, lr: float,
                   grad_norm: torch.Tensor | None) -> bool:
        """The update whose forward was added last is done; False (nothing kept) when
        no forward was added since the previous update."""
        if len(self.targets) != len(self.host) + 1:
            return False
        self.host.append((gamma, amplitude, period, lr))  # gamma: a read-only row, not copied
        self.grad_norms.append(grad_norm)
        return True

    def add_eval(self, step: int, logits: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.no_grad():
            x = as_float(logits.detach())
            y = targets.detach().reshape(-1).long()
            self.evals.append((step, class_stats(x.argmax(1), y, neg_sample_loss(x, y, self.loss), self.C)[0]))

    def take(self, columns: int) -> ChunkResult | None:
        """The complete updates' rows (and held-out rows) and an empty log after them;
        None when there is nothing to record."""
        n = self.updates
        if not n and not self.evals:
            return None
        rows = np.empty((0, columns))
        if n:
            with torch.no_grad():
                y = torch.cat([t.reshape(-1) for t in self.targets[:n]]).long()
                sizes = torch.tensor([t.numel() for t in self.targets[:n]], device=y.device)
                which = torch.repeat_interleave(torch.arange(n, device=y.device), sizes)
                x = as_float(torch.cat(self.outputs[:n]))
                known = self.neg_loss[:n]
                lp = (torch.cat(known).to(x.dtype) if all(v is not None for v in known)
                      else neg_sample_loss(x, y, self.loss))
                raw = class_stats(x.argmax(1), y, lp, self.C, n, which)
                norms = self.grad_norms[:n]
                gn = (torch.stack(norms).to(raw) if all(v is not None for v in norms)
                      else torch.full((n,), float("nan"), dtype=raw.dtype, device=raw.device))
                extra = torch.stack([gn, torch.stack(self.losses[:n]).to(raw)], 1)
                host = torch.cat([raw, extra], 1).cpu().numpy().astype(np.float64)  # the one sync
            gam = np.stack([h[0] for h in self.host])
            amp, per, lr = (np.array([h[i] for h in self.host], dtype=np.float64) for i in (1, 2, 3))
            rows = metric_rows(self.step0, host[:, :-1], gam, amp, per, lr, self.C, f=host[:, -1])
        result = ChunkResult(rows=rows, eval_rows=eval_rows(self.evals, self.C), kept=n)
        self.reset(self.step0 + n)
        return result
