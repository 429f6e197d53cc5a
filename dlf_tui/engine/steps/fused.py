"""Full-batch GD on an MLP with the backward pass written out by hand.

Feature-major, every buffer preallocated, parameters and gradients in one flat
tensor (so the update and ‖g‖ are one op each): a fixed sequence of tensor ops
per update with no autograd graph.  ``ckernel.CKernelMLPStep`` subclasses it
and replaces ``step`` with one call into a C kernel.

Either loss of ``[loss] kind`` (``self.loss``): "ce", F = (1/N) Σ_n Γ[y_n]·CE_n, or
"mse", F = (1/N) Σ_n Γ[y_n]·‖f(x_n) − e_{y_n}‖² on the raw outputs f, so that
dF/df = (f − e_y)·2Γ[y]/N.  The statistics row's first C slots are Σ_{n∈c} −ℓ_n:
Σ log p(y_n) for ce, −Σ of the squared errors for mse (``base.py``).

``tests/test_math.py``, ``tests/test_fused_mse.py`` and ``tests/test_ckernel.py`` prove it
agrees with autograd and with the reference (1e-10, float64).
"""

from __future__ import annotations

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset
from dlf_tui.engine.steps.base import Stepper

_THRESHOLD_BACKWARD_OUT = torch.ops.aten.threshold_backward.grad_input


class FusedMLPStep(Stepper):
    """Hand-written full-batch GD step; the model's parameters become views of one flat buffer."""

    needs_label_table = True  # the (rows × C × N) table of −Y·Γ[y]/N used by ``step`` (ce)

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
        self._label_table = self.needs_label_table and self.loss == "ce"
        if self._label_table:
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
        if self._label_table:
            torch.mul(self.YT.unsqueeze(0), self.wtab[:k].unsqueeze(1), out=self.nywtab[:k]).neg_()

    def step(self, i: int) -> None:
        Wa, A, H, Z = self.Wa, self.A, self.H, self.Z
        L = len(Wa) - 1
        for l in range(L):
            torch.mm(Wa[l], A[l], out=Z[l])
            torch.clamp_min(Z[l], 0.0, out=H[l])
        torch.mm(Wa[L], A[L], out=self.LT)
        if self.loss == "mse":
            d = self._mse_top(i)
        else:
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

    def _mse_top(self, i: int) -> torch.Tensor:
        """Statistics row ``i`` of the outputs in ``LT`` (which it then overwrites) under the
        squared error, and dF/doutputs = (f − Y)·2Γ[y]/N into ``d``, returned."""
        out = self.LT
        torch.amax(out, 0, keepdim=True, out=self.mx)
        torch.gather(out, 0, self.labr, out=self.lg)
        torch.ge(self.lg, self.mx, out=self.S1)
        err = torch.sub(out, self.YT, out=self.d)
        torch.sum(torch.mul(err, err, out=out), 0, keepdim=True, out=self.S0).neg_()  # −ℓ_n
        torch.mm(self.S, self.Y, out=self.stat_rows[i])
        return err.mul_(self.w_rows[i]).mul_(2.0)
