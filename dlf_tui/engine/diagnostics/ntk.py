"""The empirical neural tangent kernel's λ_max (the paper's Fig. 4, with the Hessian's).

The logit-traced empirical NTK on a fixed subset of inputs (definition in
:func:`ntk_matrix`): a structured path for :class:`models.MLP` that forms no
Jacobian, and a ``torch.func`` Jacobian path for any model.  Like
``hessian.py`` it reads a detached snapshot of the parameters and never
updates a batch norm's running statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from dlf_tui.engine.diagnostics.hessian import ParamSnapshot, is_plain_mlp
from dlf_tui.engine.diagnostics.lanczos import lanczos
from dlf_tui.engine.models import MLP

__all__ = ["NTK_METHODS", "NTK_SOLVERS", "ntk_matrix", "ntk_top_eig", "subset"]

NTK_METHODS = ("auto", "mlp", "jacobian")
NTK_SOLVERS = ("auto", "eigvalsh", "lanczos")
NTK_EIGVALSH_MAX = 200  # "auto": eigvalsh up to this many points, Lanczos above


def _couples_samples(model: nn.Module) -> bool:
    """A train-mode batch norm makes each output depend on the whole batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def _ntk_jacobian(model: nn.Module, x: torch.Tensor, chunk: int | None,
                  max_bytes: float) -> tuple[torch.Tensor, int]:
    snap = ParamSnapshot(model)
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
        method = "mlp" if is_plain_mlp(model) else "jacobian"
    if method == "mlp":
        if not is_plain_mlp(model):
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
