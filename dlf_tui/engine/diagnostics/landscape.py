"""Landscape diagnostics of a live run: the Hessian's top eigenvalues and the NTK's λ_max.

Two quantities of the paper's Fig. 4 (arXiv 2102.03793, ARCHITECTURE.md, "The science"),
computed on a schedule by :class:`Diagnostics` from the parts beside it:

- ``hessian.py``: Hessian-vector products of the *dynamical* loss
  F(θ) = mean_n Γ[y_n]·CE_n at the current Γ (hand-written for an MLP,
  autograd / ``torch.func`` for any model);
- ``lanczos.py``: the Lanczos iteration that turns those products into the
  top-k eigenvalues (gradient descent with learning rate η is stable only
  while λ_max < 2/η);
- ``ntk.py``: the largest eigenvalue of the logit-traced empirical neural
  tangent kernel on a fixed subset of inputs.

Nothing here changes a parameter, leaves a ``.grad``, or draws from the global
RNG (start vectors come from a private ``torch.Generator``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import nn

from dlf_tui.engine.diagnostics.hessian import hessian_operator
from dlf_tui.engine.diagnostics.lanczos import LanczosInfo, default_tol, lanczos, random_start, warm_vector
from dlf_tui.engine.diagnostics.ntk import NTK_SOLVERS, ntk_top_eig, subset

__all__ = ["Diagnostics"]


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
    reachable), so a call converges in fewer products than from a random
    start — least so in plain CE's edge-of-stability oscillation, where the
    top direction swings each update (``bench/diagnostics.py`` measures both).
    Side-effect free: no parameter is touched, no ``.grad`` is left, the
    global RNG is not used (a private generator seeded ``seed``), batch-norm
    running statistics are not updated.  The model's parameters are read at
    each call (``named_parameters()``): a stepper must keep them current (the
    fused and C-kernel steppers do: the parameters are views of their buffer).

    Cadence: keep ``every`` odd.  Past 2/η, gradient descent oscillates with
    period 2 and λ_max alternates between two branches on even and odd
    updates (on spiral-fig4 around update 4,200: 2.5 vs 1.4); an even cadence
    samples one branch only — every 100 never shows the first crossing that
    every 25 shows.  A call costs one forward pass plus one Hessian-vector
    product per Lanczos step.

    Options: the engine builds this from ``[diagnostics]`` of the run's config,
    whose rules (``core/config.py``: ``every`` >= 1, default 501) are the
    ones a run and a live edit are held to.  The constructor's own defaults
    (``every`` 125) and :attr:`OPTIONS` checks are for direct use (tests,
    ``bench/diagnostics.py``), where 0 means "never" for ``every`` and
    ``ntk_every``.
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
                 ntk_solver: str = "auto", hvp: str = "auto", seed: int = 0, loss: str = "ce"):
        self.model = model
        self.op = hessian_operator(model, x, y, hvp, loss)
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

    # -- computing -----------------------------------------------------------
    def hessian(self, gamma: Any) -> tuple[list[float], LanczosInfo]:
        op = self.op
        op.prepare(gamma)  # re-takes the views if the parameter objects were replaced
        try:
            n = op.n
            U = self._U
            if self.warm_start and U is not None and U.shape[0] == n:
                v0 = warm_vector(U, self.warm_mix, self.gen)
            else:
                v0 = random_start(n, self.gen, self.dtype, self.device)
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
