"""Hessian-vector products of the dynamical loss, and its top eigenvalues.

F(θ) = mean_n Γ[y_n]·CE_n at the current Γ (:func:`dynamical_loss`); its
Hessian's λ_max is one of the paper's Fig. 4 quantities (arXiv 2102.03793, §3
of ARCHITECTURE.md): gradient descent with learning rate η is stable only while
λ_max < 2/η.

Everything works on a *snapshot* of the model's parameters, taken as detached
tensors (``p.detach()``, :class:`ParamSnapshot`): nothing here reads or writes
``.grad`` or depends on ``requires_grad`` (the fused stepper turns the
parameters into ``requires_grad=False`` views of one flat buffer), and nothing
changes a parameter.  Flat vectors use the layout of
``torch.nn.utils.parameters_to_vector``: ``model.named_parameters()`` order,
each tensor flattened row-major.

Three interchangeable implementations of v ↦ ∇²F·v:

- ``"mlp"`` (used automatically for :class:`models.MLP`): the R-operator
  (Pearlmutter 1994) written out by hand for a ReLU MLP with softmax
  cross-entropy: one forward pass per :meth:`HessianOperator.prepare`, then a
  fixed, small sequence of tensor ops per product (no autograd graph).
- ``"autograd"`` (any ``nn.Module``, via ``torch.func.functional_call``): double
  backward; the gradient graph is built once per ``prepare``, each product is
  one backward through it.
- ``"func"``: ``torch.func.jvp(torch.func.grad(F))`` forward-over-reverse;
  independent of the other two (used as a cross-check), and the slowest on the CPU.

All three treat ReLU''(0) = 0 and ReLU'(0) = 0, as autograd does.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from dlf_tui.engine.diagnostics.lanczos import LanczosInfo, default_tol, lanczos, random_start
from dlf_tui.engine.models import MLP
from dlf_tui.engine.loss import LOSSES, dynamical_ce, dynamical_mse

__all__ = ["HVP_METHODS", "dynamical_loss", "ParamSnapshot", "HessianOperator", "hessian_operator",
           "hessian_top_eigs", "is_plain_mlp"]

HVP_METHODS = ("auto", "mlp", "autograd", "func")


dynamical_loss = dynamical_ce  # F = mean_n Γ[y_n]·CE_n, the library's own (engine/loss.py)
LOSS_FUNCTIONS = {"ce": dynamical_ce, "mse": dynamical_mse}  # [loss] kind → F


def _as_gamma(gamma: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(gamma, torch.Tensor):
        return gamma.detach().to(dtype=dtype, device=device).reshape(-1)
    return torch.as_tensor(np.asarray(gamma, dtype=np.float64), dtype=dtype, device=device).reshape(-1)


class ParamSnapshot:
    """Detached views of a model's parameters (shared storage: always current),
    cached and re-taken only if the model's parameter objects change."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._key: tuple | None = None
        self.refresh()

    def refresh(self) -> bool:
        named = list(self.model.named_parameters())
        key = tuple((n, id(p), p.data_ptr(), tuple(p.shape)) for n, p in named)
        if key == self._key:
            return False
        self._key = key
        self.names = [n for n, _ in named]
        self.tensors = [p.detach() for _, p in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n = sum(self.numels)
        first = self.tensors[0]
        self.dtype, self.device = first.dtype, first.device
        self.buffers = {n: b for n, b in self.model.named_buffers()}
        return True

    def split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(s) for t, s in zip(torch.split(v, self.numels), self.shapes)]

    def flat(self) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in self.tensors])


class HessianOperator:
    """v ↦ ∇²F(θ)·v for F = :func:`dynamical_loss` on a fixed batch (x, y).

    Call :meth:`prepare` with Γ (after every parameter change), then call the
    operator on flat vectors of length ``n``.  :meth:`release` drops what
    :meth:`prepare` built (the autograd graph).
    """

    method = "?"

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce"):
        self.model = model
        self.loss = LOSS_FUNCTIONS[loss]
        self.snap = ParamSnapshot(model)
        self.x = x.to(dtype=self.snap.dtype, device=self.snap.device)
        self.y = y.to(device=self.snap.device)

    @property
    def n(self) -> int:
        return self.snap.n

    def prepare(self, gamma: Any) -> None:
        raise NotImplementedError

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def release(self) -> None:
        pass

    def _loss_fn(self, gamma: torch.Tensor) -> Callable[[dict], torch.Tensor]:
        buffers = self.snap.buffers
        model, x, y, loss = self.model, self.x, self.y, self.loss

        def f(params: dict) -> torch.Tensor:
            # fresh copies of the buffers, made inside the (possibly transformed)
            # function: a train-mode batch norm updates those, never the real ones
            bufs = {k: b.clone() for k, b in buffers.items()}
            return loss(functional_call(model, (params, bufs), (x,)), y, gamma)

        return f


class _AutogradHvp(HessianOperator):
    """Double backward through ``functional_call`` on fresh leaf tensors."""

    method = "autograd"

    def prepare(self, gamma: Any) -> None:
        self.snap.refresh()
        gamma = _as_gamma(gamma, self.snap.dtype, self.snap.device)
        leaves = [t.detach().requires_grad_(True) for t in self.snap.tensors]
        f = self._loss_fn(gamma)
        with torch.enable_grad():
            loss = f(dict(zip(self.snap.names, leaves)))
            grads = torch.autograd.grad(loss, leaves, create_graph=True)
        self._leaves, self._grads = leaves, grads

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            hv = torch.autograd.grad(self._grads, self._leaves, grad_outputs=self.snap.split(v),
                                     retain_graph=True, allow_unused=True)
        return torch.cat([(h if h is not None else torch.zeros_like(t)).reshape(-1)
                          for h, t in zip(hv, self._leaves)])

    def release(self) -> None:
        self._leaves = self._grads = None


class _FuncHvp(HessianOperator):
    """``torch.func.jvp(torch.func.grad(F))``: forward-over-reverse."""

    method = "func"

    def prepare(self, gamma: Any) -> None:
        self.snap.refresh()
        gamma = _as_gamma(gamma, self.snap.dtype, self.snap.device)
        self._params = dict(zip(self.snap.names, self.snap.tensors))
        self._grad = torch.func.grad(self._loss_fn(gamma))

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        tangent = dict(zip(self.snap.names, self.snap.split(v)))
        _, hv = torch.func.jvp(self._grad, (self._params,), (tangent,))
        return torch.cat([hv[k].reshape(-1) for k in self.snap.names])

    def release(self) -> None:
        self._params = self._grad = None


class _MLPHvp(HessianOperator):
    """The R-operator of :class:`models.MLP` (ReLU hidden layers, softmax CE), by hand.

    Feature-major (samples along columns).  With H_0 = xᵀ, Z_l = W_l H_l + b_l,
    H_{l+1} = relu(Z_l) = M_l ⊙ Z_l, logits Z_L, P = softmax(Z_L), w_n = Γ[y_n]/N:

    gradient   D_L = (P − Y)·w,   D_{l−1} = (W_lᵀ D_l) ⊙ M_{l−1},
               ∂F/∂W_l = D_l H_lᵀ,   ∂F/∂b_l = D_l·1.
    along v = (V_l, c_l), with R(·) the directional derivative:
               RZ_l = V_l H_l + c_l + W_l RH_l,   RH_{l+1} = M_l ⊙ RZ_l   (RH_0 = 0),
               RD_L = w·P ⊙ (RZ_L − Σ_c P_c RZ_L,c),
               RD_{l−1} = (W_lᵀ RD_l + V_lᵀ D_l) ⊙ M_{l−1},
    Hv:        R∂F/∂W_l = RD_l H_lᵀ + D_l RH_lᵀ,   R∂F/∂b_l = RD_l·1.
    """

    method = "mlp"

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce"):
        super().__init__(model, x, y, loss)
        self.L = len(model.layers) - 1
        expect = [f"layers.{i}.{w}" for i in range(self.L + 1) for w in ("weight", "bias")]
        if self.snap.names != expect:  # pragma: no cover - MLP always has this layout
            raise ValueError("unexpected MLP parameter layout")
        self.N = int(self.y.shape[0])
        self.XT = self.x.flatten(1).t().contiguous()  # MLP.forward flattens images too
        C = model.layers[-1].out_features
        self.YT = nn.functional.one_hot(self.y, C).to(self.snap.dtype).t()
        self.out = torch.empty(self.snap.n, dtype=self.snap.dtype, device=self.snap.device)
        self.out_views = self.snap.split(self.out)

    def prepare(self, gamma: Any) -> None:
        if self.snap.refresh():
            self.out_views = self.snap.split(self.out)
        gamma = _as_gamma(gamma, self.snap.dtype, self.snap.device)
        ts = self.snap.tensors
        self.W = ts[0::2]
        self.b = [t[:, None] for t in ts[1::2]]
        with torch.no_grad():
            H, M = [self.XT], []
            for l in range(self.L):
                h = torch.addmm(self.b[l], self.W[l], H[-1]).clamp_min_(0.0)
                H.append(h)
                M.append(torch.sign(h))  # relu'(z) = 1[z > 0] = sign(relu(z))
            z = torch.addmm(self.b[self.L], self.W[self.L], H[-1])
            P = z.softmax(0)
            wr = (gamma[self.y] / self.N)[None, :]
            D = [None] * (self.L + 1)
            D[self.L] = (P - self.YT) * wr
            for l in range(self.L, 0, -1):
                D[l - 1] = torch.mm(self.W[l].t(), D[l]).mul_(M[l - 1])
        self.H, self.HT, self.M, self.P, self.Pw, self.D = H, [h.t() for h in H], M, P, P * wr, D

    @torch.no_grad()
    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        vs = self.snap.split(v.reshape(-1))
        V, c = vs[0::2], vs[1::2]
        L, W, H, M, D = self.L, self.W, self.H, self.M, self.D
        RH: list[torch.Tensor | None] = [None]
        RZ = torch.addmm(c[0][:, None], V[0], H[0])
        for l in range(1, L + 1):
            rh = RZ.mul_(M[l - 1])
            RH.append(rh)
            RZ = torch.addmm(c[l][:, None], V[l], H[l]).addmm_(W[l], rh)
        t = RZ.mul_(self.Pw)
        RD = torch.addcmul(t, self.P, t.sum(0, keepdim=True), value=-1.0)
        ov = self.out_views
        for l in range(L, -1, -1):
            torch.mm(RD, self.HT[l], out=ov[2 * l])
            torch.sum(RD, 1, out=ov[2 * l + 1])
            if l:
                ov[2 * l].addmm_(D[l], RH[l].t())
                RD = torch.mm(W[l].t(), RD).addmm_(V[l].t(), D[l]).mul_(M[l - 1])
        return self.out

    def release(self) -> None:
        self.H = self.HT = self.M = self.P = self.Pw = self.D = None


def is_plain_mlp(model: nn.Module) -> bool:
    return type(model) is MLP


def hessian_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     method: str = "auto", loss: str = "ce") -> HessianOperator:
    """The Hessian-vector product of the dynamical loss (``loss``: ce or mse) on (x, y);
    see the module doc.  The hand-written R-operator is the CE's: an MSE run and any
    model other than ``models.MLP`` use autograd."""
    if method not in HVP_METHODS:
        raise ValueError(f"unknown Hessian-vector method {method!r} (one of {', '.join(HVP_METHODS)})")
    if loss not in LOSSES:
        raise ValueError(f"loss = {loss!r}: one of {', '.join(LOSSES)}")
    if method == "auto":
        method = "mlp" if is_plain_mlp(model) and loss == "ce" else "autograd"
    if method == "mlp" and not (is_plain_mlp(model) and loss == "ce"):
        raise ValueError("method 'mlp' needs a dlf_tui MLP and the cross-entropy")
    cls = {"mlp": _MLPHvp, "autograd": _AutogradHvp, "func": _FuncHvp}[method]
    return cls(model, x, y, loss)


def hessian_top_eigs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gamma: Any, *,
                     iters: int = 20, k: int = 1, tol: float | None = None,
                     generator: torch.Generator | None = None, v0: torch.Tensor | None = None,
                     min_iters: int = 1, method: str = "auto") -> tuple[list[float], LanczosInfo]:
    """Top-``k`` eigenvalues (largest first) of the Hessian of F = mean Γ[y]·CE at
    the model's current parameters, on the batch (x, y), by Lanczos.

    ``gamma``: the C class weights (tensor, array or list).  ``tol``: relative
    tolerance on the eigenvalue error estimate (default :func:`default_tol`).
    The start vector is ``v0`` if given (a warm start, flat parameter layout),
    else a normal draw from ``generator`` (default: a fresh one seeded 0; the
    global RNG is never used).  ``info.vectors`` holds the Ritz vectors.
    """
    op = hessian_operator(model, x, y, method)
    dtype, device = op.snap.dtype, op.snap.device
    if tol is None:
        tol = default_tol(dtype)
    if v0 is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        v0 = random_start(op.n, gen, dtype, device)
    op.prepare(gamma)
    try:
        return lanczos(op, v0.to(dtype=dtype, device=device), iters=iters, k=k, tol=tol,
                       min_iters=min_iters)
    finally:
        op.release()
