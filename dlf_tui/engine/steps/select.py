"""One training update, two implementations with the same contract.

A stepper performs update ``i`` of the current chunk and writes the update's
statistics into row ``i`` of a preallocated device buffer — no host sync:

    row = [Σ_{n∈c} log p(y_n)  (C) | correct per class (C) | samples per class (C) | ‖g‖]

all from the forward pass the update already did (parameters *before* the
update).  The host turns a chunk of rows into F, CE and accuracies at flush time.

- ``FusedMLPStep``: full-batch gradient descent on an MLP with the backward pass
  written out by hand, feature-major, every buffer preallocated, parameters and
  gradients in one flat tensor (so the update and ‖g‖ are one op each).  About
  17 tensor ops per update; ~2× faster than eager autograd on the spiral.
- ``CKernelMLPStep`` (``ckernel.py``): the same update as one call into a small C
  kernel compiled at first use (CPU, one hidden layer); ~3× faster again.
- ``AutogradStep``: any model, mini-batches, SGD with momentum or Adam, image
  data (on-device augmentation + normalisation), bf16 autocast, channels-last,
  torch.compile; and the one path of a run across several processes
  (``distributed.py``: each rank computes its share of the batch, DDP sums the
  gradients, so the update is the single-process update).

``tests/test_math.py`` and ``tests/test_ckernel.py`` prove they agree (1e-10, float64).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.images import crop_flip, random_ints

log = logging.getLogger("dlf_tui.engine")
TABLE_ELEMENTS = 1 << 22  # cap on the per-chunk (rows × C × N) weight table
_THRESHOLD_BACKWARD_OUT = torch.ops.aten.threshold_backward.grad_input


def stats_width(classes: int) -> int:
    return 3 * classes + 1


class _Base:
    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int):
        self.cfg = cfg
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

    def optimizer_state(self) -> dict:
        return {}

    def load_optimizer_state(self, state: dict) -> None:
        pass

    # -- divergence guard: a copy of everything an update changes ----------------------
    def snapshot(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer_state())}

    def restore(self, snap: dict) -> None:
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(snap["model"][k])
        self.load_optimizer_state(copy.deepcopy(snap["optimizer"]))

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
        """(3, C): Σ log p(y) per class, correct per class, count per class.

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
                lp = logits.log_softmax(1)
                Yv = nn.functional.one_hot(y, self.C).to(self.dtype)
                S = torch.stack([lp.gather(1, y[:, None])[:, 0],
                                 (logits.argmax(1) == y).to(self.dtype),
                                 torch.ones_like(lp[:, 0])])
                out += S @ Yv
        finally:
            self.model.train(was_training)
        return out


class FusedMLPStep(_Base):
    """Hand-written full-batch GD step; the model's parameters become views of one flat buffer."""

    needs_label_table = True  # the (rows × C × N) table of −Y·Γ[y]/N used by ``step``

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int):
        super().__init__(cfg, model, data, chunk_rows)
        dt, dev = self.dtype, self.device
        tr = data.train
        N, C = tr.n, self.C
        self.N = N
        layers = list(model.layers)
        shapes = [(l.out_features, l.in_features + 1) for l in layers]
        total = sum(a * b for a, b in shapes)
        self.P = torch.zeros(total, dtype=dt, device=dev)
        self.G = torch.zeros(total, dtype=dt, device=dev)
        self.Wa, self.gWa = [], []
        off = 0
        for layer, (o, i1) in zip(layers, shapes):
            wa = self.P[off: off + o * i1].view(o, i1)
            with torch.no_grad():
                wa[:, :-1] = layer.weight
                wa[:, -1] = layer.bias
            # the module now reads and writes the flat buffer (no copies to sync)
            layer.weight = nn.Parameter(wa[:, :-1], requires_grad=False)
            layer.bias = nn.Parameter(wa[:, -1], requires_grad=False)
            self.Wa.append(wa)
            self.gWa.append(self.G[off: off + o * i1].view(o, i1))
            off += o * i1
        # activations, feature-major, each with a trailing row of ones (the bias input)
        self.A = [torch.cat([tr.x.t(), torch.ones(1, N, dtype=dt, device=dev)]).contiguous()]
        self.Z, self.dA = [], []
        for layer in layers[:-1]:
            a = torch.ones(layer.out_features + 1, N, dtype=dt, device=dev)
            self.A.append(a)
            self.Z.append(torch.empty(layer.out_features, N, dtype=dt, device=dev))
            self.dA.append(torch.empty(layer.out_features, N, dtype=dt, device=dev))
        self.AT = [a.t() for a in self.A]
        self.H = [a[:-1] for a in self.A[1:]]
        self.W_noBias_T = [wa[:, :-1].t() for wa in self.Wa]
        self.LT = torch.empty(C, N, dtype=dt, device=dev)
        self.labr = tr.y.view(1, N)
        self.YT = self.Y.t().contiguous()
        self.S = torch.zeros(3, N, dtype=dt, device=dev)
        self.S[2] = 1.0
        self.S0, self.S1 = self.S[0:1], self.S[1:2]
        self.mx = torch.empty(1, N, dtype=dt, device=dev)
        self.lg = torch.empty(1, N, dtype=dt, device=dev)
        self.d = torch.empty(C, N, dtype=dt, device=dev)
        # per-chunk tables: per-sample weights Γ[y_n]/N and −Y·Γ[y_n]/N
        self.wtab = torch.empty(chunk_rows, N, dtype=dt, device=dev)
        self.w_rows = [self.wtab[i].view(1, N) for i in range(chunk_rows)]
        if self.needs_label_table:
            self.nywtab = torch.empty(chunk_rows, C, N, dtype=dt, device=dev)
            self.nyw_rows = list(self.nywtab.unbind(0))
        self.lr = cfg.optim.lr

    def snapshot(self) -> dict:
        return {"P": self.P.clone()}

    def restore(self, snap: dict) -> None:
        self.P.copy_(snap["P"])

    def params_finite(self) -> bool:
        return bool(torch.isfinite(self.P).all())  # one host sync per chunk

    def begin_chunk(self, gammas: torch.Tensor) -> None:
        k = gammas.shape[0]
        torch.mm(gammas, self.YT, out=self.wtab[:k]).div_(self.N)
        torch.mul(self.YT.unsqueeze(0), self.wtab[:k].unsqueeze(1), out=self.nywtab[:k]).neg_()

    def step(self, i: int) -> None:
        Wa, A, H, Z = self.Wa, self.A, self.H, self.Z
        L = len(Wa) - 1
        for l in range(L):
            torch.mm(Wa[l], A[l], out=Z[l])
            torch.clamp_min(Z[l], 0.0, out=H[l])
        torch.mm(Wa[L], A[L], out=self.LT)
        lp = self.LT.log_softmax(0)
        # statistics of this forward pass (sample-sums per class via one matmul)
        torch.gather(lp, 0, self.labr, out=self.S0)
        torch.amax(self.LT, 0, keepdim=True, out=self.mx)
        torch.gather(self.LT, 0, self.labr, out=self.lg)
        torch.ge(self.lg, self.mx, out=self.S1)
        torch.mm(self.S, self.Y, out=self.stat_rows[i])
        # backward: dF/dlogits = (softmax − Y)·Γ[y]/N
        d = torch.addcmul(self.nyw_rows[i], lp.exp_(), self.w_rows[i], out=self.d)
        for l in range(L, -1, -1):
            torch.mm(d, self.AT[l], out=self.gWa[l])
            if l:
                torch.mm(self.W_noBias_T[l], d, out=self.dA[l - 1])
                d = _THRESHOLD_BACKWARD_OUT(self.dA[l - 1], H[l - 1], 0.0, grad_input=self.dA[l - 1])
        torch.linalg.vector_norm(self.G, out=self.gn_rows[i])
        self.P.sub_(self.G, alpha=self.lr)


class AutogradStep(_Base):
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
        """The loss mean_n Γ[y_n]·CE_n of rows ``idx`` (None = all) and their
        (3, C) statistics [Σ log p(y) | correct | count] per class."""
        if idx is None:
            x, y, Y = X, Yl, Y1
        else:
            x, y, Y = X[idx], Yl[idx], Y1[idx]
        logits = self._logits(x, r, self.net)
        lp = logits.log_softmax(1)
        lpy = lp.gather(1, y[:, None])[:, 0]
        loss = (-(gam[y] * lpy).mean() if self.loss_scale is None
                else -(gam[y] * lpy).sum() * self.loss_scale)
        d = lpy.detach()
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

    def optimizer_state(self) -> dict:
        return {"opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "aug_gen": self.aug_gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_optimizer_state(self, state: dict) -> None:
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


def wants_fused(cfg: Config, data: Dataset) -> bool:
    """Full-batch GD on an MLP over vector data: the hand-fused update applies."""
    return (cfg.run.fused and cfg.optim.name == "gd" and cfg.optim.weight_decay == 0
            and cfg.data.batch_size == 0 and cfg.model.kind == "mlp"
            and data.image is None  # images need the per-step input pipeline
            and cfg.run.amp == "off" and not cfg.run.compile)  # options only autograd has


def make(cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int, group=None) -> _Base:
    """The fastest stepper that computes this config exactly: the C kernel (CPU,
    one hidden layer), else the fused torch step, else autograd.  A rank of a
    distributed run (``group``) always trains through autograd + DDP."""
    fused = wants_fused(cfg, data)
    if group is not None:
        if fused:
            log.info("fused step not used: %d ranks train through autograd and "
                     "DistributedDataParallel (the fused steps are single-process)", group.world)
        return AutogradStep(cfg, model, data, chunk_rows, group=group)
    if fused and data.train.x.device.type == "cpu":
        from dlf_tui.engine.steps import ckernel  # imported here: ckernel imports this module

        if ckernel.usable(cfg, model, data.train.x.device):
            return ckernel.CKernelMLPStep(cfg, model, data, chunk_rows)
        if len(model.layers) == 2:
            log.info("C kernel not used: %s", ckernel.REASON)
    return (FusedMLPStep if fused else AutogradStep)(cfg, model, data, chunk_rows)


def table_rows(cap: int, row_elements: int) -> int:
    """Rows of a per-chunk table whose rows hold ``row_elements`` numbers: at most ``cap``,
    at least 16, and within ``TABLE_ELEMENTS`` in all (the fused step's and the sweep's)."""
    return max(16, min(cap, TABLE_ELEMENTS // max(1, row_elements)))


def chunk_rows(cfg: Config, data: Dataset) -> int:
    """Most updates between two flushes (a flush also comes every ``flush_seconds``):
    ``flush_every``, capped for the fused step, whose per-chunk tables are rows × C × N."""
    rows = cfg.run.flush_every
    if wants_fused(cfg, data):
        rows = table_rows(rows, data.classes * data.train.n)
    return rows
