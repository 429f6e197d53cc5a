"""The general stepper: autograd, any model, mini-batches, SGD (momentum) or Adam.

Also image data (on-device augmentation + normalisation), bf16 autocast,
channels-last, torch.compile; and the one path of a run across several
processes (``distributed.py``: each rank computes its share of the batch, DDP
sums the gradients, so the update is the single-process update).
"""

from __future__ import annotations

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset
from dlf_tui.engine.images import crop_flip, random_ints
from dlf_tui.engine.steps.base import Stepper, stats_width
from dlf_tui.engine.loss import neg_sample_loss, weighted_loss


class AutogradStep(Stepper):
    """General path: autograd, optional mini-batches, SGD (momentum) or Adam.

    Image data (uint8 on the device) is turned into inputs per step on the
    device: batch sampled from an on-device permutation, random crop + flip from
    a second seeded device generator, per-channel normalisation.  Options of
    ``[run]``: ``amp = "bf16"`` autocasts the forward pass (loss and statistics
    stay in the run's dtype), ``channels_last``, ``compile`` (torch.compile of
    the forward pass + loss + statistics; backward through AOTAutograd)."""

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int,
                 group=None):
        super().__init__(cfg, model, data, chunk_rows)
        tr = data.train
        pdtype = next(model.parameters()).dtype
        if self.dtype != pdtype:  # image data: uint8 pixels, statistics in the model's dtype
            self.dtype = pdtype
            C = self.C
            self.Y = nn.functional.one_hot(tr.y, C).to(pdtype)
            self.buf = torch.zeros(chunk_rows, stats_width(C), dtype=pdtype, device=self.device)
            self.stat_rows = [self.buf[i, : 3 * C].view(3, C) for i in range(chunk_rows)]
            self.gn_rows = [self.buf[i, 3 * C] for i in range(chunk_rows)]
        r = cfg.run
        self.image = data.image
        if self.image is not None:
            self.scale, self.shift = self.image.scale_shift(self.device, self.dtype)
        self.channels_last = bool(r.channels_last and self.image is not None)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.amp = r.amp == "bf16"
        o = cfg.optim
        params = [p for p in model.parameters()]
        if o.name == "adam":
            self.opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.params = params
        self.lr = o.lr
        self.B = cfg.data.batch_size
        # One process trains on everything.  A rank of a distributed run (``group``,
        # see distributed.py) trains on rows lo:hi of every global batch — the full
        # batch, or each mini-batch of the permutation all ranks draw alike — with
        # the loss Σ_rows Γ[y]·CE · world / (global batch size): DDP averages the
        # ranks' gradients into the gradient of the global mean loss, whatever the
        # shard sizes.
        self.group = group
        self.net = model  # what the training forward runs through (DDP across ranks)
        self.X, self.Yl, self.Y1 = tr.x, tr.y, self.Y
        self.loss_scale: float | None = None
        if group is not None:
            self.net = group.wrap(model)
            n = self.B or tr.n
            self.loss_scale = group.world / n
            self.lo, self.hi = group.bounds(n)
            if not self.B:  # full batch: this rank's rows, once
                self.X, self.Yl, self.Y1 = (t[self.lo: self.hi] for t in (tr.x, tr.y, self.Y))
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.run.seed + 1)
        # augmentation draws from its own stream: the batch order does not depend on it
        self.aug_gen = torch.Generator(device=self.device).manual_seed(cfg.run.seed + 2)
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.gam = torch.empty(chunk_rows, self.C, dtype=self.dtype, device=self.device)
        self.gam_rows = list(self.gam.unbind(0))
        self.gam_now = torch.empty(self.C, dtype=self.dtype, device=self.device)
        self._fwd = self._forward_stats
        self._eval_fwd = self._logits
        if r.compile:
            self._fwd = torch.compile(self._forward_stats)
            self._eval_fwd = torch.compile(self._logits)

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        for g in self.opt.param_groups:
            g["lr"] = self.lr

    def begin_chunk(self, gammas: torch.Tensor) -> None:
        self.gam[: gammas.shape[0]].copy_(gammas)

    def _batch(self) -> torch.Tensor | None:
        """Row indices of the next mini-batch (an on-device permutation per epoch),
        or None for the full batch."""
        if not self.B:
            return None
        n = self.data.train.n
        if self.perm is None or self.pos + self.B > n:
            self.perm = torch.randperm(n, generator=self.gen, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos: self.pos + self.B]
        self.pos += self.B
        return idx

    # -- what torch.compile sees: tensors in, tensors out; no generator, no Python state --
    def _inputs(self, x: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        if self.image is None:
            return x
        if r is not None:
            x = crop_flip(x, r, self.image.pad, self.image.crop, self.image.flip)
        x = torch.addcmul(self.shift, x.to(self.dtype), self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _logits(self, x: torch.Tensor, r: torch.Tensor | None = None,
                net: nn.Module | None = None) -> torch.Tensor:
        x = self._inputs(x, r)
        net = self.model if net is None else net
        if self.amp:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return net(x).to(self.dtype)
        return net(x)

    def _forward_stats(self, X: torch.Tensor, Yl: torch.Tensor, Y1: torch.Tensor,
                       idx: torch.Tensor | None, r: torch.Tensor | None,
                       gam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss mean_n Γ[y_n]·ℓ_n (ℓ = CE or squared error) of rows ``idx``
        (None = all) and their (3, C) statistics [Σ −ℓ | correct | count] per class."""
        if idx is None:
            x, y, Y = X, Yl, Y1
        else:
            x, y, Y = X[idx], Yl[idx], Y1[idx]
        logits = self._logits(x, r, self.net)
        neg = neg_sample_loss(logits, y, self.loss)
        loss = weighted_loss(neg, gam[y], self.loss_scale)
        d = neg.detach()
        S = torch.stack([d, (logits.detach().argmax(1) == y).to(self.dtype), torch.ones_like(d)])
        return loss, S @ Y

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._eval_fwd(x)

    def step(self, i: int) -> None:
        idx = self._batch()
        r = None
        if self.image is not None and self.image.augment:
            n = self.data.train.n if idx is None else self.B
            r = random_ints(n, self.image.pad, self.aug_gen, self.device)
        if self.group is not None:  # this rank's share of the global batch (and of its draws)
            if idx is not None:
                idx = idx[self.lo: self.hi]
            if r is not None:
                r = r[self.lo: self.hi]
        self.gam_now.copy_(self.gam_rows[i])  # a fixed input for torch.compile
        loss, stats = self._fwd(self.X, self.Yl, self.Y1, idx, r, self.gam_now)
        self.stat_rows[i].copy_(stats)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # one fused norm per device/dtype group on CUDA (foreach); no host sync
            total = torch.nn.utils.get_total_norm([p.grad for p in self.params])
            self.gn_rows[i].copy_(total)
        self.opt.step()

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "aug_gen": self.aug_gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"].cpu())  # a checkpoint loaded with map_location=cuda
        if "aug_gen" in state:  # older checkpoints have none
            self.aug_gen.set_state(state["aug_gen"].cpu())
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.device)
        self.pos = state["pos"]
        self.set_lr(self.lr)
