"""What every single-run stepper shares: the statistics buffer, snapshots, evaluation.

A stepper performs update ``i`` of the current chunk and writes the update's
statistics into row ``i`` of a preallocated device buffer — no host sync:

    row = [Σ_{n∈c} −ℓ_n  (C) | correct per class (C) | samples per class (C) | ‖g‖]

with ℓ_n the sample's plain loss (``[loss] kind``): CE, so −ℓ_n = log p(y_n), or the
squared error ‖f(x_n) − e_{y_n}‖²; all from the forward pass the update already did (parameters *before* the
update).  The host turns a chunk of rows into F, CE and accuracies at flush time.

A stepper is a checkpoint part like a torch module: ``state_dict()`` is what a
checkpoint stores under "optimizer" (optimizer moments, generators, the batch
position; empty for plain GD), ``load_state_dict(state)`` puts it back.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.loss import neg_sample_loss


def stats_width(classes: int) -> int:
    return 3 * classes + 1


class Stepper:
    """The shared base: buffers and the model, snapshots for the divergence guard, eval."""

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int):
        self.cfg = cfg
        self.loss = cfg.loss.kind  # "ce" | "mse"
        self.model = model
        self.data = data
        self.C = data.classes
        tr = data.train
        self.device, self.dtype = tr.x.device, tr.x.dtype
        self.Y = nn.functional.one_hot(tr.y, self.C).to(self.dtype)  # (N, C)
        self.K = chunk_rows
        self.buf = torch.zeros(chunk_rows, stats_width(self.C), dtype=self.dtype, device=self.device)
        C = self.C
        self.stat_rows = [self.buf[i, : 3 * C].view(3, C) for i in range(chunk_rows)]
        self.gn_rows = [self.buf[i, 3 * C] for i in range(chunk_rows)]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- divergence guard: a copy of everything an update changes ----------------------
    def snapshot(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.state_dict())}

    def restore(self, snap: dict) -> None:
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(snap["model"][k])
        self.load_state_dict(copy.deepcopy(snap["optimizer"]))

    def params_finite(self) -> bool:
        flags = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()])
        return bool(flags.all())  # one host sync per chunk

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of split rows (overridden where inputs need preparing)."""
        return self.model(x)

    @torch.no_grad()
    def eval_stats(self, split: Split) -> torch.Tensor:
        """(3, C): Σ −ℓ per class, correct per class, count per class.

        In batches of ``data.eval_batch_size`` rows (a fixed size, so 10k test
        images fit in memory), accumulated on the device: no host sync.  The
        model is in eval mode meanwhile (batch norm uses its running stats)."""
        B = max(1, self.cfg.data.eval_batch_size)
        out = torch.zeros(3, self.C, dtype=self.dtype, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, split.n, B):
                x, y = split.x[s: s + B], split.y[s: s + B]
                logits = self._eval_logits(x).to(self.dtype)
                neg = neg_sample_loss(logits, y, self.loss)
                Yv = nn.functional.one_hot(y, self.C).to(self.dtype)
                S = torch.stack([neg, (logits.argmax(1) == y).to(self.dtype),
                                 torch.ones_like(neg)])
                out += S @ Yv
        finally:
            self.model.train(was_training)
        return out
