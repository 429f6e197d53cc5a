"""What a live run records of each update of the user's loop, until a flush.

Per update it keeps one tuple of references to device tensors it does not wait
for — the outputs, the targets, the samples' −ℓ (the loss's own, when it computed
them) — and one of the Γ, A, T, lr in force and, optionally, the gradient norm.
``take()`` turns them into metric rows in a few batched ops and one host transfer;
F is Σ_c Γ_c·(Σ ℓ of class c)/N from those statistics, as the engine records it.
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
        # per forward: (logits detached, targets, per-sample −ℓ or None)
        self.forwards: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        # per update: Γ (a read-only row, not copied), A, T, lr, ‖g‖ (a device scalar or None)
        self.host: list[tuple[np.ndarray, float, int, float, torch.Tensor | None]] = []
        self.evals: list[tuple[int, torch.Tensor]] = []

    @property
    def updates(self) -> int:
        """Updates complete in the log (their ``end_update`` was called)."""
        return len(self.host)

    def add_forward(self, logits: torch.Tensor, targets: torch.Tensor,
                    neg_loss: torch.Tensor | None = None) -> None:
        """An update's forward: its outputs, targets and the samples' −ℓ if the loss
        computed them (references only: no work here)."""
        self.forwards.append((logits.detach(), targets.detach() if targets.requires_grad
                              else targets, neg_loss))

    def end_update(self, gamma: np.ndarray, amplitude: float, period: int, lr: float,
                   grad_norm: torch.Tensor | None) -> bool:
        """The update whose forward was added last is done; False (nothing kept) when
        no forward was added since the previous update."""
        if len(self.forwards) != len(self.host) + 1:
            return False
        self.host.append((gamma, amplitude, period, lr, grad_norm))
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
            outputs, targets, known = zip(*self.forwards[:n])
            gam, amp, per, lr, norms = zip(*self.host)
            with torch.no_grad():
                y = torch.cat([t.reshape(-1) for t in targets]).long()
                sizes = torch.tensor([t.numel() for t in targets], device=y.device)
                which = torch.repeat_interleave(torch.arange(n, device=y.device), sizes)
                x = as_float(torch.cat(outputs))
                lp = (torch.cat(known).to(x.dtype) if all(v is not None for v in known)
                      else neg_sample_loss(x, y, self.loss))
                raw = class_stats(x.argmax(1), y, lp, self.C, n, which)
                gn = (torch.stack(norms).to(raw) if all(v is not None for v in norms)
                      else torch.full((n,), float("nan"), dtype=raw.dtype, device=raw.device))
                host = torch.cat([raw, gn[:, None]], 1).cpu().numpy().astype(np.float64)  # the one sync
            rows = metric_rows(self.step0, host, np.stack(gam), *(np.array(v, dtype=np.float64)
                               for v in (amp, per, lr)), self.C)
        result = ChunkResult(rows=rows, eval_rows=eval_rows(self.evals, self.C), kept=n)
        self.reset(self.step0 + n)
        return result
