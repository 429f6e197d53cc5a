"""Steps that update every member of an ensemble at once (``ensemble.py``).

Both keep the members' parameters stacked along a leading member axis and write,
per update ``i``, the single-run statistics row of every member into
``buf[i, m]`` = [Σ −ℓ per class | correct per class | count per class | ‖g‖]
(the layout of ``base.py``; ℓ = CE or the squared error, ``[loss] kind``) — no host sync.  Each member has its own Γ row
and learning rate; the members must share the architecture and the data.

- ``BatchedMLPStep``: full-batch GD on an MLP written out by hand, like
  ``FusedMLPStep`` with a member axis: the same fixed sequence of tensor ops per
  update for any number of members (batched matmuls).  What the GPU wants: one
  launch sequence trains all members.
- ``VmapStep``: the same update through ``torch.func`` — ``functional_call`` of
  the member's own ``nn.Module`` over stacked parameters, ``vmap`` of
  ``grad_and_value`` — for any model; slower (vmap's batching rules per op).

``tests/test_ensemble.py`` proves both equal separate single runs (1e-9, float64).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dlf_tui.engine.loss import neg_sample_loss, weighted_loss
from dlf_tui.engine.steps.select import table_rows

_THRESHOLD_BACKWARD_OUT = torch.ops.aten.threshold_backward.grad_input


class _Stacked:
    """What both steps share: buffers, learning rates, per-member snapshots."""

    def __init__(self, engines: list, rows: int):
        e0 = engines[0]
        self.engines = engines
        self.M, self.C, self.dtype, self.device = len(engines), e0.C, e0.dtype, e0.device
        tr = e0.data.train
        self.N = tr.n
        self.rows = table_rows(rows, self.M * self.N)  # the (rows × M × N) weight table
        self.buf = torch.zeros(self.rows, self.M, 3 * self.C + 1, dtype=self.dtype, device=self.device)
        self.lr = torch.tensor([e.lr for e in engines], dtype=self.dtype, device=self.device)
        self.loss = e0.cfg.loss.kind  # members of one stack share it (``loops.sweep.choose_mode``)

    def set_lrs(self, lrs: list[float]) -> None:
        self.lr.copy_(torch.tensor(lrs, dtype=self.dtype))

    def snapshot(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.tensors()]

    def restore_member(self, j: int, snap: list[torch.Tensor]) -> None:
        for t, s in zip(self.tensors(), snap):
            t[j].copy_(s[j])

    def params_finite(self) -> torch.Tensor:
        """(M,) bool: every parameter of member m finite (no host sync)."""
        return torch.stack([torch.isfinite(t).flatten(1).all(1) for t in self.tensors()]).all(0)


class BatchedMLPStep(_Stacked):
    """Full-batch GD of M MLPs of one shape on one data set, feature-major, by hand."""

    def __init__(self, engines: list, rows: int):
        super().__init__(engines, rows)
        dt, dev, M, N, C = self.dtype, self.device, self.M, self.N, self.C
        tr = engines[0].data.train
        layers0 = list(engines[0].model.layers)
        shapes = [(l.out_features, l.in_features + 1) for l in layers0]
        # one contiguous (M, out, in+1) tensor per layer, the bias in the last column
        self.Wa = [torch.zeros(M, o, i1, dtype=dt, device=dev) for o, i1 in shapes]
        self.gWa = [torch.zeros(M, o, i1, dtype=dt, device=dev) for o, i1 in shapes]
        with torch.no_grad():
            for m, e in enumerate(engines):
                for l, layer in enumerate(e.model.layers):
                    self.Wa[l][m, :, :-1] = layer.weight
                    self.Wa[l][m, :, -1] = layer.bias
        self.L = len(shapes) - 1
        self.A0 = torch.cat([tr.x.t(), torch.ones(1, N, dtype=dt, device=dev)]).contiguous()
        self.A0T = self.A0.t()
        self.A, self.Z, self.dA = [self.A0], [], []
        for o, _ in shapes[:-1]:
            self.A.append(torch.ones(M, o + 1, N, dtype=dt, device=dev))
            self.Z.append(torch.empty(M, o, N, dtype=dt, device=dev))
            self.dA.append(torch.empty(M, o, N, dtype=dt, device=dev))
        self.H = [a[:, :-1] for a in self.A[1:]]
        self.AT = [self.A0T] + [a.transpose(1, 2) for a in self.A[1:]]
        self.WnbT = [w[:, :, :-1].transpose(1, 2) for w in self.Wa]
        self.LT = torch.empty(M, C, N, dtype=dt, device=dev)
        self.Y = nn.functional.one_hot(tr.y, C).to(dt)  # (N, C)
        self.YT = self.Y.t().contiguous()  # (C, N)
        self.lab = tr.y.view(1, 1, N).expand(M, 1, N)
        self.S = torch.zeros(M, 3, N, dtype=dt, device=dev)
        self.S[:, 2] = 1.0
        self.S0, self.S1 = self.S[:, 0:1], self.S[:, 1:2]
        self.mx = torch.empty(M, 1, N, dtype=dt, device=dev)
        self.lg = torch.empty(M, 1, N, dtype=dt, device=dev)
        self.d = torch.empty(M, C, N, dtype=dt, device=dev)
        self.wtab = torch.empty(self.rows, M, 1, N, dtype=dt, device=dev)
        self.neglr = torch.empty(M, 1, 1, dtype=dt, device=dev)
        self.stat = torch.empty(M, 3, C, dtype=dt, device=dev)
        self.sq = torch.empty(M, dtype=dt, device=dev)

    def tensors(self) -> list[torch.Tensor]:
        return self.Wa

    def begin_round(self, gam: torch.Tensor) -> None:
        """gam: (k, M, C) Γ rows of this round's updates."""
        k = gam.shape[0]
        torch.matmul(gam, self.YT, out=self.wtab[:k, :, 0]).div_(self.N)  # Γ_m[y_n] / N
        torch.neg(self.lr, out=self.neglr[:, 0, 0])

    def _forward(self, A0: torch.Tensor, As: list, Zs: list, LT: torch.Tensor) -> torch.Tensor:
        """The outputs (M, C, n) into ``LT``."""
        x = A0
        for l in range(self.L):
            torch.matmul(self.Wa[l], x, out=Zs[l])
            torch.clamp_min(Zs[l], 0.0, out=As[l][:, :-1])
            x = As[l]
        return torch.matmul(self.Wa[self.L], x, out=LT)

    def _neg_loss(self, LT: torch.Tensor, YT: torch.Tensor, lab: torch.Tensor,
                  out: torch.Tensor) -> torch.Tensor:
        """Per-sample −ℓ into ``out`` (M, 1, n); returns what the backward starts from:
        the softmax (ce) or the error f − e_y (mse), both (M, C, n)."""
        if self.loss == "mse":
            err = LT - YT
            out.copy_(err.square().sum(1, keepdim=True)).neg_()
            return err
        lp = LT.log_softmax(1)
        torch.gather(lp, 1, lab, out=out)
        return lp.exp_()

    def step(self, i: int) -> None:
        M, C = self.M, self.C
        self._forward(self.A0, self.A[1:], self.Z, self.LT)
        back = self._neg_loss(self.LT, self.YT, self.lab, self.S0)
        torch.amax(self.LT, 1, keepdim=True, out=self.mx)
        torch.gather(self.LT, 1, self.lab, out=self.lg)
        torch.ge(self.lg, self.mx, out=self.S1)
        row = self.buf[i]
        torch.matmul(self.S, self.Y, out=self.stat)
        row[:, : 3 * C] = self.stat.view(M, 3 * C)
        if self.loss == "mse":  # dF/df = 2(f − Y)·Γ[y]/N
            d = torch.mul(back, self.wtab[i], out=self.d).mul_(2.0)
        else:  # dF/dlogits = (softmax − Y)·Γ[y]/N
            d = torch.sub(back, self.YT, out=self.d).mul_(self.wtab[i])
        for l in range(self.L, -1, -1):
            torch.matmul(d, self.AT[l], out=self.gWa[l])
            if l:
                torch.matmul(self.WnbT[l], d, out=self.dA[l - 1])
                d = _THRESHOLD_BACKWARD_OUT(self.dA[l - 1], self.H[l - 1], 0.0,
                                            grad_input=self.dA[l - 1])
        sq = self.sq.zero_()
        for g, w in zip(self.gWa, self.Wa):
            sq += g.square().sum((1, 2))
            w.addcmul_(g, self.neglr)
        row[:, 3 * C] = sq.sqrt_()

    @torch.no_grad()
    def eval_stats(self, split) -> torch.Tensor:
        """(M, 3, C) held-out statistics at the current parameters."""
        M, n, dt, dev = self.M, split.n, self.dtype, self.device
        A0 = torch.cat([split.x.t(), torch.ones(1, n, dtype=dt, device=dev)])
        As = [torch.ones(M, a.shape[1], n, dtype=dt, device=dev) for a in self.A[1:]]
        Zs = [torch.empty(M, a.shape[1] - 1, n, dtype=dt, device=dev) for a in self.A[1:]]
        LT = torch.empty(M, self.C, n, dtype=dt, device=dev)
        self._forward(A0, As, Zs, LT)
        lab = split.y.view(1, 1, n).expand(M, 1, n)
        S = torch.ones(M, 3, n, dtype=dt, device=dev)
        YT = nn.functional.one_hot(split.y, self.C).to(dt).t()
        neg = torch.empty(M, 1, n, dtype=dt, device=dev)
        self._neg_loss(LT, YT, lab, neg)
        S[:, 0:1] = neg
        S[:, 1:2] = torch.gather(LT, 1, lab) >= torch.amax(LT, 1, keepdim=True)
        return S @ nn.functional.one_hot(split.y, self.C).to(dt)

    @torch.no_grad()
    def write_back(self, j: int) -> None:
        """Member j's parameters into its own model (for its checkpoint)."""
        for l, layer in enumerate(self.engines[j].model.layers):
            layer.weight.copy_(self.Wa[l][j, :, :-1])
            layer.bias.copy_(self.Wa[l][j, :, -1])


class VmapStep(_Stacked):
    """The same update via torch.func: functional_call + vmap(grad_and_value) over stacked
    parameters.  Works for any model; used when asked for (``--mode vmap``)."""

    def __init__(self, engines: list, rows: int):
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        super().__init__(engines, rows)
        params, buffers = stack_module_state([e.model for e in engines])
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self.buffers = buffers
        base = copy.deepcopy(engines[0].model).to("meta")
        C, dt, kind = self.C, self.dtype, self.loss
        tr = engines[0].data.train

        def loss_stats(p, b, gam, x, y, Yh):
            logits = functional_call(base, (p, b), (x,))
            neg = neg_sample_loss(logits, y, kind)
            loss = weighted_loss(neg, gam[y])
            d = neg.detach()
            S = torch.stack([d, (logits.detach().argmax(1) == y).to(dt), torch.ones_like(d)])
            return loss, S @ Yh

        self._grad = vmap(grad_and_value(loss_stats, has_aux=True), in_dims=(0, 0, 0, None, None, None))
        self._fwd = vmap(loss_stats, in_dims=(0, 0, None, None, None, None))
        self.train_xy = (tr.x, tr.y, nn.functional.one_hot(tr.y, C).to(dt))
        self.gam = torch.empty(self.rows, self.M, C, dtype=dt, device=self.device)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def begin_round(self, gam: torch.Tensor) -> None:
        self.gam[: gam.shape[0]].copy_(gam)

    def step(self, i: int) -> None:
        grads, (_, S) = self._grad(self.params, self.buffers, self.gam[i], *self.train_xy)
        C, M = self.C, self.M
        self.buf[i, :, : 3 * C] = S.reshape(M, 3 * C)
        sq = sum((g.reshape(M, -1) ** 2).sum(1) for g in grads.values())
        self.buf[i, :, 3 * C] = torch.sqrt(sq)
        for name, g in grads.items():
            p = self.params[name]
            p.sub_(g * self.lr.view(-1, *([1] * (p.dim() - 1))))

    @torch.no_grad()
    def eval_stats(self, split) -> torch.Tensor:
        ones = torch.ones(self.C, dtype=self.dtype, device=self.device)
        _, S = self._fwd(self.params, self.buffers, ones, split.x, split.y,
                         nn.functional.one_hot(split.y, self.C).to(self.dtype))
        return S

    @torch.no_grad()
    def write_back(self, j: int) -> None:
        for name, p in self.engines[j].model.named_parameters():
            p.copy_(self.params[name][j])
