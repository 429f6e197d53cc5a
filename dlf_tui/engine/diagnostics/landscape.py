"""Landscape diagnostics: the Hessian's top eigenvalues and the NTK's λ_max.

Two quantities of the paper's Fig. 4 (arXiv 2102.03793, §3 of DESIGN.md):

- **Hessian λ_max** of the *dynamical* loss F(θ) = mean_n Γ[y_n]·CE_n at the
  current Γ, by Lanczos on Hessian-vector products.  Gradient descent with
  learning rate η is stable only while λ_max < 2/η.
- **NTK λ_max**: the largest eigenvalue of the logit-traced empirical neural
  tangent kernel on a fixed subset of inputs (definition in :func:`ntk_matrix`).

Everything works on a *snapshot* of the model's parameters, taken as detached
tensors (``p.detach()``): nothing here reads or writes ``.grad`` or depends on
``requires_grad`` (the fused stepper turns the parameters into
``requires_grad=False`` views of one flat buffer), nothing changes a parameter,
nothing draws from the global RNG (start vectors come from a private
``torch.Generator``).

Flat vectors (Lanczos vectors, Ritz vectors) use the layout of
``torch.nn.utils.parameters_to_vector``: ``model.named_parameters()`` order,
each tensor flattened row-major.

Hessian-vector products, three interchangeable implementations:

- ``"mlp"`` (used automatically for :class:`models.MLP`): the R-operator
  (Pearlmutter 1994) written out by hand for a ReLU MLP with softmax
  cross-entropy: one forward pass per :meth:`prepare`, then ~15 tensor ops per
  product (on the spiral ~0.14 ms ≈ 1.3 fused training updates; double
  backward takes ~0.45 ms, ``torch.func`` ~3–5 ms).
- ``"autograd"`` (any ``nn.Module``, via ``torch.func.functional_call``): double
  backward; the gradient graph is built once per :meth:`prepare`, each product
  is one backward through it.
- ``"func"``: ``torch.func.jvp(torch.func.grad(F))`` forward-over-reverse;
  independent of the other two (used as a cross-check), but slow on the CPU.

All three treat ReLU''(0) = 0 and ReLU'(0) = 0, as autograd does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from dlf_tui.engine.models import MLP

__all__ = [
    "LanczosInfo", "lanczos", "dynamical_loss", "HessianOperator", "hessian_operator",
    "hessian_top_eigs", "ntk_matrix", "ntk_top_eig", "subset", "Diagnostics",
]

HVP_METHODS = ("auto", "mlp", "autograd", "func")
NTK_METHODS = ("auto", "mlp", "jacobian")
NTK_SOLVERS = ("auto", "eigvalsh", "lanczos")
NTK_EIGVALSH_MAX = 200  # "auto": eigvalsh up to this many points, Lanczos above


def default_tol(dtype: torch.dtype) -> float:
    """Relative tolerance on the eigenvalue error estimate: 1e-7 in float64,
    ~1e-5 in float32 (100 ulps; the products themselves are no better)."""
    return max(1e-7, 100.0 * torch.finfo(dtype).eps)


# --------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------
@dataclass
class LanczosInfo:
    """What one Lanczos run did.

    ``err_est`` is the error estimate of each reported Ritz value,
    min(r, r²/gap) with r = β_j·|s_ji| the residual norm ‖Hu − θu‖ of the Ritz
    pair and gap the distance to the nearest other Ritz value (the Temple /
    Kato bound with the Ritz gap standing in for the spectral gap, as ARPACK
    does).  ``converged`` means every reported value has
    ``err_est <= tol·max|θ|``, or the Krylov space became invariant
    (``breakdown``; then the Ritz values are exact eigenvalues).
    """

    iters: int  # Lanczos steps = matrix-vector products
    converged: bool
    breakdown: bool
    ritz: list[float]  # all Ritz values, descending
    residuals: list[float]  # of the reported top-k
    err_est: list[float]  # of the reported top-k
    tol: float
    vectors: torch.Tensor | None = field(default=None, repr=False)  # (n, ≥k) top Ritz vectors


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, *,
            iters: int, k: int = 1, tol: float = 1e-7, min_iters: int = 1,
            vectors: int | None = None) -> tuple[list[float], LanczosInfo]:
    """Top-``k`` (largest algebraic) eigenvalues of the symmetric operator ``matvec``.

    Lanczos with full reorthogonalisation (classical Gram–Schmidt, twice), at
    most ``iters`` products (capped at the dimension), stopping as soon as
    ``j >= min_iters`` and every top-k Ritz value's error estimate is below
    ``tol`` relative to the largest |Ritz value| (see :class:`LanczosInfo`).
    ``matvec`` may return a buffer it reuses: the result is consumed before the
    next call.  One host sync per step (the two scalars α, β).  ``vectors``:
    how many top Ritz vectors to return in ``info.vectors`` (default k, 0 = none).
    """
    if iters < 1 or k < 1:
        raise ValueError("iters and k must be >= 1")
    v0 = v0.reshape(-1)
    n = v0.numel()
    m = min(int(iters), n)
    Q = v0.new_empty(m, n)
    rows = Q.unbind(0)
    nrm = float(torch.linalg.vector_norm(v0))
    if not (nrm > 0 and math.isfinite(nrm)):
        raise ValueError("start vector is zero or not finite")
    torch.div(v0, nrm, out=rows[0])
    T = np.zeros((m, m))
    th: list[float] = []  # Ritz values, descending
    S = np.zeros((1, 1))  # eigenvectors of T, columns in the order of th
    resid: list[float] = []
    err: list[float] = []
    converged = breakdown = False
    tmax = 0.0  # max |entry| of T: the scale of the breakdown test
    j = 0
    for j in range(m):
        w = matvec(rows[j]).reshape(-1)
        Qj = Q.narrow(0, 0, j + 1)
        QjT = Qj.t()
        h = torch.mv(Qj, w)
        w = torch.addmv(w, QjT, h, alpha=-1.0)
        h2 = torch.mv(Qj, w)
        w = torch.addmv(w, QjT, h2, alpha=-1.0)
        b = torch.linalg.vector_norm(w)
        ab = torch.cat((h.add_(h2).narrow(0, j, 1), b.reshape(1))).tolist()  # one sync
        a_f, b_f = ab
        if not (math.isfinite(a_f) and math.isfinite(b_f)):
            raise FloatingPointError("the operator returned a non-finite vector")
        T[j, j] = a_f
        tmax = max(tmax, abs(a_f), b_f)
        last = j == m - 1
        breakdown = b_f <= 1e-13 * tmax  # the Krylov space is invariant: Ritz values exact
        if j + 1 >= max(min_iters, k) or last or breakdown:
            theta, S = np.linalg.eigh(T[: j + 1, : j + 1])
            S = S[:, ::-1]
            th = theta[::-1].tolist()
            kk = min(k, j + 1)
            scale = max(abs(th[0]), abs(th[-1]), 1e-300)
            srow = S[j].tolist()
            resid, err = [], []
            for i in range(kk):
                r = b_f * abs(srow[i])
                gap = min([abs(th[i] - th[i2]) for i2 in (i - 1, i + 1) if 0 <= i2 <= j] or [math.inf])
                resid.append(r)
                # Temple/Kato: |θ − λ| ≤ r²/gap; with no other Ritz value, only r
                err.append(0.0 if breakdown else (min(r, r * r / gap) if 0 < gap < math.inf else r))
            converged = breakdown or (kk == k and j + 1 >= min_iters and max(err) <= tol * scale)
            if converged or last:
                break
        T[j, j + 1] = T[j + 1, j] = b_f
        torch.div(w, b, out=rows[j + 1])
    if j + 1 == n and not converged:  # the whole space is spanned: exact
        converged = True
    kk = min(k, j + 1)
    nv = min(k if vectors is None else int(vectors), j + 1)
    U = None
    if nv > 0:
        Sk = torch.as_tensor(S[:, :nv].copy(), dtype=Q.dtype, device=Q.device)
        U = Q.narrow(0, 0, j + 1).t() @ Sk
    eigs = th[:kk]
    info = LanczosInfo(j + 1, bool(converged), bool(breakdown), th, resid, err, float(tol), U)
    return eigs, info


# --------------------------------------------------------------------------
# The dynamical loss and its Hessian-vector products
# --------------------------------------------------------------------------
def dynamical_loss(logits: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """F = mean_n Γ[y_n]·CE_n (static cross-entropy is Γ ≡ 1)."""
    ce = nn.functional.cross_entropy(logits, y, reduction="none")
    return (gamma[y] * ce).mean()


def _as_gamma(gamma: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(gamma, torch.Tensor):
        return gamma.detach().to(dtype=dtype, device=device).reshape(-1)
    return torch.as_tensor(np.asarray(gamma, dtype=np.float64), dtype=dtype, device=device).reshape(-1)


class _ParamSnapshot:
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

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.model = model
        self.snap = _ParamSnapshot(model)
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
        model, x, y = self.model, self.x, self.y

        def f(params: dict) -> torch.Tensor:
            # fresh copies of the buffers, made inside the (possibly transformed)
            # function: a train-mode batch norm updates those, never the real ones
            bufs = {k: b.clone() for k, b in buffers.items()}
            return dynamical_loss(functional_call(model, (params, bufs), (x,)), y, gamma)

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

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        super().__init__(model, x, y)
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


def _is_plain_mlp(model: nn.Module) -> bool:
    return type(model) is MLP


def hessian_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     method: str = "auto") -> HessianOperator:
    """The Hessian-vector product of the dynamical loss on (x, y); see the module doc."""
    if method not in HVP_METHODS:
        raise ValueError(f"unknown Hessian-vector method {method!r} (one of {', '.join(HVP_METHODS)})")
    if method == "auto":
        method = "mlp" if _is_plain_mlp(model) else "autograd"
    if method == "mlp" and not _is_plain_mlp(model):
        raise ValueError("method 'mlp' needs a dlf_tui MLP")
    cls = {"mlp": _MLPHvp, "autograd": _AutogradHvp, "func": _FuncHvp}[method]
    return cls(model, x, y)


def _random_start(n: int, generator: torch.Generator, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    # drawn on the CPU so the start vector is the same on every device
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    return v.to(dtype=dtype, device=device)


def _warm_vector(U: torch.Tensor, mix: float, generator: torch.Generator) -> torch.Tensor:
    """Σ_i u_i/√k plus ``mix`` times a random unit vector: mostly the previous
    top Ritz vectors, with a component along everything else so that a new top
    eigenvalue can still emerge."""
    v = U.sum(1) / math.sqrt(U.shape[1])
    if mix > 0:
        r = _random_start(v.numel(), generator, v.dtype, v.device)
        v = v + (mix / float(torch.linalg.vector_norm(r))) * r
    return v


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
        v0 = _random_start(op.n, gen, dtype, device)
    op.prepare(gamma)
    try:
        return lanczos(op, v0.to(dtype=dtype, device=device), iters=iters, k=k, tol=tol,
                       min_iters=min_iters)
    finally:
        op.release()


# --------------------------------------------------------------------------
# The empirical NTK
# --------------------------------------------------------------------------
def _couples_samples(model: nn.Module) -> bool:
    """A train-mode batch norm makes each output depend on the whole batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def _ntk_jacobian(model: nn.Module, x: torch.Tensor, chunk: int | None,
                  max_bytes: float) -> tuple[torch.Tensor, int]:
    snap = _ParamSnapshot(model)
    with torch.no_grad():  # C from a forward pass on two samples (copied buffers)
        C = int(functional_call(model, ({}, {k: b.clone() for k, b in snap.buffers.items()}),
                                (x[:2],)).shape[-1])
    need = x.shape[0] * C * snap.n * torch.finfo(snap.dtype).bits / 8
    if need > max_bytes:
        raise ValueError(f"NTK on {x.shape[0]} points needs a {x.shape[0]}×{C}×{snap.n} Jacobian "
                         f"({need / 2**30:.1f} GiB > {max_bytes / 2**30:.1f} GiB): use fewer points")
    params = dict(zip(snap.names, snap.tensors))
    buffers = snap.buffers

    def copies() -> dict:  # made inside the transforms: the real running stats stay put
        return {k: b.clone() for k, b in buffers.items()}

    if _couples_samples(model):
        # the network function of the whole batch: n·C reverse passes (chunked)
        def fb(p: dict) -> torch.Tensor:
            return functional_call(model, (p, copies()), (x,))

        jac = torch.func.jacrev(fb, chunk_size=chunk)(params)
    else:
        # per sample: vmap over samples (``chunk`` at a time) of C reverse passes
        def f1(p: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (p, copies()), (xi.unsqueeze(0),)).squeeze(0)

        jac = torch.func.vmap(torch.func.jacrev(f1), in_dims=(None, 0), chunk_size=chunk)(params, x)
    n = x.shape[0]
    theta = None
    for name in snap.names:  # Θ = Σ over parameter tensors of J_p J_pᵀ (no concatenated J)
        J = jac[name].reshape(n, -1)
        theta = J @ J.t() if theta is None else theta.addmm_(J, J.t())
        del J
    return theta, C


def _ntk_mlp(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """Structured NTK of a ReLU MLP (no Jacobian is formed).

    ∂f_c(x_i)/∂[W_l | b_l] = δ_l^c(x_i) ⊗ [h_l(x_i); 1], so
    Θ_ij = Σ_l ([h_l(x_i); 1]·[h_l(x_j); 1]) · Σ_c δ_l^c(x_i)·δ_l^c(x_j),
    with δ_L^c = e_c and δ_{l−1}^c = (W_lᵀ δ_l^c) ⊙ relu'(z_{l−1}).
    """
    layers = list(model.layers)
    L = len(layers) - 1
    with torch.no_grad():
        W = [l.weight.detach() for l in layers]
        b = [l.bias.detach() for l in layers]
        n = x.shape[0]
        H, M = [x.flatten(1)], []
        for l in range(L):
            h = torch.addmm(b[l], H[-1], W[l].t()).clamp_min_(0.0)  # (n, out), sample-major
            H.append(h)
            M.append(torch.sign(h))
        C = W[L].shape[0]
        delta = torch.eye(C, dtype=x.dtype, device=x.device).expand(n, C, C)  # (n, c, out_L)
        theta = torch.zeros(n, n, dtype=x.dtype, device=x.device)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        for l in range(L, -1, -1):
            K = torch.addmm(one, H[l], H[l].t())
            if l == L:  # δ_L^c = e_c: Σ_c δ·δ = C
                G = torch.full((n, n), float(C), dtype=x.dtype, device=x.device)
            elif l == L - 1:  # δ^c = W_L[c] ⊙ m: Σ_c δ_i·δ_j = Σ_h m_ih m_jh Σ_c W_L[c,h]²
                G = (M[l] * W[L].square().sum(0)) @ M[l].t()
            else:
                dflat = delta.reshape(n, -1)
                G = dflat @ dflat.t()
            theta.addcmul_(K, G)
            if l:
                delta = (delta @ W[l]) * M[l - 1][:, None, :]  # (n, c, out_{l-1})
    return theta


def ntk_matrix(model: nn.Module, x: torch.Tensor, *, chunk: int | None = None,
               reduction: str = "sum", method: str = "auto",
               max_bytes: float = 2 * 2**30) -> torch.Tensor:
    """The logit-traced empirical NTK on inputs x: the (n × n) matrix

        Θ_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩      (reduction "sum", default)

    over the C output logits f_c, i.e. Θ = Σ_c J_c J_cᵀ with J_c the (n × P)
    Jacobian of logit c.  Why traced: the full NTK is (nC × nC); its trace
    over the logit pair is the n × n kernel the paper's authors' tooling
    (neural-tangents, ``trace_axes=(-1,)``) reports, and λ_max(Θ) =
    λ_max(Σ_c J_cᵀ J_c) is the top curvature of the logits' Gauss–Newton
    matrix.  neural-tangents divides by C (the *mean* over logits): pass
    ``reduction="mean"`` for that convention.  No 1/n factor either way.

    ``method``: "mlp" (structured, no Jacobian formed; automatic for
    :class:`models.MLP`) or "jacobian" (any model: ``vmap`` over samples of
    ``jacrev``, ``chunk`` samples at a time; memory n·C·P).  A model with a
    train-mode batch norm couples the samples: then J is the Jacobian of the
    whole batch's logits (``jacrev`` over the batch function, ``chunk``
    reverse passes at a time), n× the compute; running statistics are never
    updated (the buffers are copied).  The Jacobian path refuses (ValueError)
    when the n·C·P Jacobian would exceed ``max_bytes``.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError("reduction must be 'sum' or 'mean'")
    if method not in NTK_METHODS:
        raise ValueError(f"unknown NTK method {method!r} (one of {', '.join(NTK_METHODS)})")
    p0 = next(model.parameters())
    x = x.to(dtype=p0.dtype, device=p0.device)
    if method == "auto":
        method = "mlp" if _is_plain_mlp(model) else "jacobian"
    if method == "mlp":
        if not _is_plain_mlp(model):
            raise ValueError("method 'mlp' needs a dlf_tui MLP")
        theta = _ntk_mlp(model, x)
        C = model.layers[-1].out_features
    else:
        theta, C = _ntk_jacobian(model, x, chunk, max_bytes)
    if reduction == "mean":
        theta = theta / C
    return theta


def ntk_top_eig(model: nn.Module, x: torch.Tensor, *, chunk: int | None = None,
                reduction: str = "sum", method: str = "auto", solver: str = "eigvalsh",
                tol: float = 1e-12, max_bytes: float = 2 * 2**30) -> float:
    """λ_max of :func:`ntk_matrix` (same arguments).  ``solver="eigvalsh"``: the
    full spectrum of the n × n matrix (O(n³)); ``"lanczos"``: Lanczos on Θ to
    relative ``tol`` (Θ is positive semi-definite with a dominant top
    eigenvalue, so a handful of steps suffice; O(n²) each); ``"auto"``:
    eigvalsh up to ``NTK_EIGVALSH_MAX`` points, Lanczos above."""
    if solver not in NTK_SOLVERS:
        raise ValueError(f"unknown NTK solver {solver!r} (one of {', '.join(NTK_SOLVERS)})")
    theta = ntk_matrix(model, x, chunk=chunk, reduction=reduction, method=method, max_bytes=max_bytes)
    if solver == "auto":
        solver = "eigvalsh" if theta.shape[0] <= NTK_EIGVALSH_MAX else "lanczos"
    if solver == "eigvalsh":
        return float(torch.linalg.eigvalsh(theta)[-1])
    n = theta.shape[0]
    v0 = torch.ones(n, dtype=theta.dtype, device=theta.device)  # Θ ≥ 0 entrywise-ish: a good start
    eigs, _ = lanczos(lambda v: theta @ v, v0, iters=min(n, 60), k=1, tol=tol, vectors=0)
    return eigs[0]


def subset(x: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` rows of x, evenly spaced (deterministic; covers every class of
    a class-ordered data set such as the spiral)."""
    n = x.shape[0]
    if size <= 0 or size >= n:
        return x
    idx = torch.linspace(0, n - 1, size, dtype=torch.float64).round().long().to(x.device)
    return x.index_select(0, idx)


# --------------------------------------------------------------------------
# The trainer's helper
# --------------------------------------------------------------------------
class Diagnostics:
    """Landscape diagnostics for a live run.

    ``due(step)`` says whether anything is scheduled at ``step`` (the Hessian
    every ``every`` updates, the NTK every ``ntk_every``; 0 = never), and
    ``compute(gamma, step)`` computes what is due (``force=True``: both) and
    returns a dict with ``nan`` for what was not computed.  Call it with the
    parameters an update is about to use and that update's Γ (the same pair as
    the update's F).  Options can be changed between calls with
    :meth:`configure`.

    Costs are kept low by caching the Hessian operator (parameter views,
    one-hot labels, output buffer) and by warm-starting Lanczos from the
    previous call's top-k Ritz vectors (valid because the Hessian moves slowly
    between calls; a ``warm_mix`` random component keeps a new top direction
    reachable), so a call needs a few products instead of ~20: on the spiral
    at lr 1, every 25 updates, ~3–4 at A = 70 and ~7 in plain CE's
    edge-of-stability oscillation (where the top direction swings each update).
    Side-effect free: no parameter is touched, no ``.grad`` is left, the
    global RNG is not used (a private generator seeded ``seed``), batch-norm
    running statistics are not updated.  The model's parameters are read at
    each call (``named_parameters()``): a stepper must keep them current (the
    fused and C-kernel steppers do: the parameters are views of their buffer).

    Cadence: keep ``every`` odd (default 125).  Past 2/η, gradient descent
    oscillates with period 2 and λ_max alternates between two branches on
    even and odd updates (on spiral-fig4 around update 4,200: 2.5 vs 1.4); an
    even cadence samples one branch only — every 100 never shows the first
    crossing that every 25 shows.  Cost per call on the spiral (float64, one
    CPU thread): ~0.14 ms of forward pass plus ~0.22 ms per Lanczos step.
    """

    # option: (type, check) — the single list used by __init__, configure and options
    OPTIONS: dict[str, tuple[type, Callable[[Any], bool]]] = {
        "enabled": (bool, lambda v: True),
        "every": (int, lambda v: v >= 0),
        "iters": (int, lambda v: v >= 1),
        "k": (int, lambda v: v >= 1),
        "tol": (float, lambda v: v > 0),
        "min_iters": (int, lambda v: v >= 1),
        "warm_start": (bool, lambda v: True),
        "warm_mix": (float, lambda v: v >= 0),
        "ntk_every": (int, lambda v: v >= 0),
        "ntk_size": (int, lambda v: v >= 1),
        "ntk_reduction": (str, lambda v: v in ("sum", "mean")),
        "ntk_solver": (str, lambda v: v in NTK_SOLVERS),
    }

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 ntk_x: torch.Tensor | None = None, *, enabled: bool = True, every: int = 125,
                 iters: int = 20, k: int = 1, tol: float | None = None, min_iters: int = 2,
                 warm_start: bool = True, warm_mix: float = 0.05,
                 ntk_every: int = 0, ntk_size: int = 100, ntk_reduction: str = "sum",
                 ntk_solver: str = "auto", hvp: str = "auto", seed: int = 0):
        self.model = model
        self.op = hessian_operator(model, x, y, hvp)
        self.dtype, self.device = self.op.snap.dtype, self.op.snap.device
        self.x = self.op.x
        self._ntk_x_given = ntk_x is not None
        self.ntk_x = ntk_x.to(dtype=self.dtype, device=self.device) if ntk_x is not None else None
        self.gen = torch.Generator().manual_seed(seed)
        self._U: torch.Tensor | None = None  # previous top-k Ritz vectors (n × k)
        self.last: dict | None = None
        self.enabled, self.every, self.iters, self.k, self.tol = True, 125, 20, 1, default_tol(self.dtype)
        self.min_iters, self.warm_start, self.warm_mix = 2, True, 0.05
        self.ntk_every, self.ntk_size, self.ntk_reduction, self.ntk_solver = 0, 100, "sum", "auto"
        self.configure(enabled=enabled, every=every, iters=iters, k=k, tol=tol, min_iters=min_iters,
                       warm_start=warm_start, warm_mix=warm_mix,
                       ntk_every=ntk_every, ntk_size=ntk_size, ntk_reduction=ntk_reduction,
                       ntk_solver=ntk_solver)

    # -- options -------------------------------------------------------------
    def configure(self, **opts: Any) -> None:
        """Change options mid-run (the keys of :attr:`OPTIONS`, as in the
        constructor).  ``None`` leaves an option unchanged, except ``tol=None``
        (back to the default).  Validates everything before changing anything."""
        new = self.options()
        for key, value in opts.items():
            if key not in self.OPTIONS:
                raise ValueError(f"unknown diagnostics option {key!r}")
            if value is None:
                if key == "tol":
                    new["tol"] = default_tol(self.dtype)
                continue
            kind, ok = self.OPTIONS[key]
            if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"diagnostics.{key} = {value!r}: must be a number")
            if kind is int and value != int(value):
                raise ValueError(f"diagnostics.{key} = {value!r}: must be an integer")
            new[key] = kind(value)
        for key, (_, ok) in self.OPTIONS.items():
            if not ok(new[key]):
                raise ValueError(f"diagnostics.{key} = {new[key]!r} is out of range")
        if new["k"] > new["iters"]:
            raise ValueError(f"diagnostics.k = {new['k']} exceeds iters = {new['iters']}")
        if new["k"] != self.k:
            self._U = None
        resize = self.ntk_x is None or new["ntk_size"] != self.ntk_size
        for key, value in new.items():
            setattr(self, key, value)
        if not self._ntk_x_given and resize:
            self.ntk_x = subset(self.x, self.ntk_size)

    def options(self) -> dict:
        return {key: getattr(self, key) for key in self.OPTIONS}

    def hessian_due(self, step: int) -> bool:
        return self.enabled and self.every > 0 and step % self.every == 0

    def ntk_due(self, step: int) -> bool:
        return self.enabled and self.ntk_every > 0 and step % self.ntk_every == 0

    def due(self, step: int) -> bool:
        return self.hessian_due(step) or self.ntk_due(step)

    def reset_warm_start(self) -> None:
        self._U = None

    # -- computing -----------------------------------------------------------
    def hessian(self, gamma: Any) -> tuple[list[float], LanczosInfo]:
        op = self.op
        op.prepare(gamma)  # re-takes the views if the parameter objects were replaced
        try:
            n = op.n
            U = self._U
            if self.warm_start and U is not None and U.shape[0] == n:
                v0 = _warm_vector(U, self.warm_mix, self.gen)
            else:
                v0 = _random_start(n, self.gen, self.dtype, self.device)
            eigs, info = lanczos(op, v0, iters=self.iters, k=self.k, tol=self.tol,
                                 min_iters=self.min_iters)
        finally:
            op.release()
        if info.vectors is not None:
            self._U = info.vectors
        return eigs, info

    def ntk(self) -> float:
        return ntk_top_eig(self.model, self.ntk_x, reduction=self.ntk_reduction, solver=self.ntk_solver)

    def compute(self, gamma: Any, step: int, *, force: bool = False) -> dict:
        """{"step", "hessian_lambda_max", "hessian_top" (k values, largest first),
        "hessian_iters", "hessian_converged", "hessian_err_est", "ntk_lambda_max",
        "seconds"}; nan / [] / 0 for what was not computed."""
        t0 = time.perf_counter()
        out: dict[str, Any] = {"step": int(step), "hessian_lambda_max": math.nan, "hessian_top": [],
                               "hessian_iters": 0, "hessian_converged": False,
                               "hessian_err_est": math.nan, "ntk_lambda_max": math.nan}
        if force or self.hessian_due(step):
            eigs, info = self.hessian(gamma)
            out.update(hessian_lambda_max=eigs[0], hessian_top=eigs, hessian_iters=info.iters,
                       hessian_converged=info.converged,
                       hessian_err_est=max(info.err_est) if info.err_est else math.nan)
        if force or self.ntk_due(step):
            out["ntk_lambda_max"] = self.ntk()
        out["seconds"] = time.perf_counter() - t0
        self.last = out
        return out
