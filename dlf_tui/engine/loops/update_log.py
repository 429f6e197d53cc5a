"""What a live run records of each update of the user's loop, until a flush.

Per update it keeps only references and host scalars: the detached logits and
targets, the loss the loop trained on, the update's gradient norm (a device
tensor), and the Γ, A, T and lr in force.  ``take()`` turns them into metric
rows in a few batched ops and one host transfer.
"""

from __future__ import annotations

import numpy as np
import torch

from dlf_tui.engine.recorder import ChunkResult
from dlf_tui.engine.trainer import eval_rows, metric_rows


def class_stats(logits: torch.Tensor, targets: torch.Tensor, C: int, rows: int = 1,
                which: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, 3·C) statistics [Σ log p(y) | correct | count, per class] of the
    samples; ``which`` gives the row of each sample (all in row 0 without it).
    Half-precision logits (autocast) are read in float32."""
    y = targets.reshape(-1).long()
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    lpy = x.log_softmax(1).gather(1, y[:, None])[:, 0]
    vals = torch.stack([lpy, (x.argmax(1) == y).to(x.dtype), torch.ones_like(lpy)], 1)
    out = torch.zeros(rows * C, 3, dtype=x.dtype, device=x.device)
    out.index_add_(0, y if which is None else which * C + y, vals)
    return out.view(rows, C, 3).transpose(1, 2).reshape(rows, 3 * C)


class UpdateLog:
    def __init__(self, classes: int, capacity: int, first_step: int = 0):
        self.C, self.capacity = classes, capacity
        self.reset(first_step)

    def reset(self, first_step: int) -> None:
        k, C = self.capacity, self.C
        self.step0 = first_step  # the update before the first one held
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []
        self.gam = np.empty((k, C))
        self.amp, self.per, self.lr = np.empty(k), np.empty(k), np.empty(k)
        self.evals: list[tuple[int, torch.Tensor]] = []

    @property
    def updates(self) -> int:
        """Updates complete in the log (their ``end_update`` was called)."""
        return len(self.grad_norms)

    def add_forward(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.logits.append(logits.detach())
        self.targets.append(targets.detach())
        self.losses.append(loss.detach())

    def end_update(self, gamma: np.ndarray, amplitude: float, period: int, lr: float,
                   grad_norm: torch.Tensor) -> bool:
        """The update whose forward was added last is done; False (nothing kept) when
        no forward was added since the previous update."""
        i = self.updates
        if len(self.logits) != i + 1:
            return False
        self.gam[i] = gamma
        self.amp[i], self.per[i], self.lr[i] = amplitude, period, lr
        self.grad_norms.append(grad_norm)
        return True

    def add_eval(self, step: int, logits: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.no_grad():
            self.evals.append((step, class_stats(logits.detach(), targets, self.C)[0]))

    def take(self, columns: int) -> ChunkResult | None:
        """The complete updates' rows (and held-out rows) and an empty log after them;
        None when there is nothing to record."""
        n = self.updates
        if not n and not self.evals:
            return None
        rows = np.empty((0, columns))
        if n:
            with torch.no_grad():
                y = torch.cat([t.reshape(-1) for t in self.targets[:n]])
                sizes = torch.tensor([t.numel() for t in self.targets[:n]], device=y.device)
                which = torch.repeat_interleave(torch.arange(n, device=y.device), sizes)
                raw = class_stats(torch.cat(self.logits[:n]), y, self.C, n, which)
                extra = torch.stack([torch.stack(self.grad_norms).to(raw),
                                     torch.stack(self.losses).to(raw)], 1)
                host = torch.cat([raw, extra], 1).cpu().numpy().astype(np.float64)  # the one sync
            rows = metric_rows(self.step0, host[:, :-1], self.gam[:n], self.amp[:n],
                               self.per[:n], self.lr[:n], self.C, f=host[:, -1])
        result = ChunkResult(rows=rows, eval_rows=eval_rows(self.evals, self.C), kept=n)
        self.reset(self.step0 + n)
        return result
