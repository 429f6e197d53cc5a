"""Lanczos for the top eigenvalues of a symmetric operator, and its start vectors.

The operator is a function ``v ↦ A·v`` on flat vectors (a Hessian-vector
product, ``hessian.py``; the NTK matrix, ``ntk.py``).  Start vectors come from a
caller's ``torch.Generator``, never the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["LanczosInfo", "lanczos", "default_tol", "random_start", "warm_vector"]


def default_tol(dtype: torch.dtype) -> float:
    """Relative tolerance on the eigenvalue error estimate: 1e-7 in float64,
    ~1e-5 in float32 (100 ulps; the products themselves are no better)."""
    return max(1e-7, 100.0 * torch.finfo(dtype).eps)


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


def random_start(n: int, generator: torch.Generator, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor:
    # drawn on the CPU so the start vector is the same on every device
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    return v.to(dtype=dtype, device=device)


def warm_vector(U: torch.Tensor, mix: float, generator: torch.Generator) -> torch.Tensor:
    """Σ_i u_i/√k plus ``mix`` times a random unit vector: mostly the previous
    top Ritz vectors, with a component along everything else so that a new top
    eigenvalue can still emerge."""
    v = U.sum(1) / math.sqrt(U.shape[1])
    if mix > 0:
        r = random_start(v.numel(), generator, v.dtype, v.device)
        v = v + (mix / float(torch.linalg.vector_norm(r))) * r
    return v
