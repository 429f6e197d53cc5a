"""A run's landscape diagnostics over time: when a reading is due, its diag row,
and when λ_max settles on the other side of the stability threshold 2/η."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from dlf_tui.core.config import Config
from dlf_tui.core.stability import stability
from dlf_tui.engine.diagnostics.landscape import Diagnostics

FULL_BATCH_MAX = 4096  # vector data sets up to this size: diagnostics on the whole training set
EOS_CONFIRM = 3  # readings in a row on the new side before a crossing is logged


class Monitor:
    def __init__(self, cfg: Config, model: torch.nn.Module, data, dtype: torch.dtype,
                 device: torch.device, on_event: Callable[..., None],
                 alone: Callable[[], Any] = contextlib.nullcontext):
        """``on_event(kind, message, step=…, **extra)`` records a crossing;
        ``alone()`` is the context a reading runs in (rank 0 of several ranks:
        batch norm must not wait for the others)."""
        d = cfg.diagnostics
        self.cfg, self.model, self.data, self.dtype, self.device = cfg, model, data, dtype, device
        self.on_event, self.alone = on_event, alone
        self.enabled, self.every, self.ntk_every = d.enabled, d.every, d.ntk_every
        self._probe = None  # the Diagnostics helper, made when first needed
        self._above: bool | None = None  # which side of the stability line λ_max has settled on
        # the optimiser's line: 2/η (GD), 2(1+β)/η (heavy-ball momentum), none (Adam)
        self.edge = stability({"optim": dataclasses.asdict(cfg.optim)}).edge
        self._pending: list[tuple[int, float]] = []

    def options(self) -> dict[str, Any]:
        return {"diagnostics": self.enabled, "diagnostics_every": self.every,
                "ntk_every": self.ntk_every}

    def configure(self, diagnostics: bool | None = None, diagnostics_every: int | None = None,
                  ntk_every: int | None = None) -> None:
        """A live edit of the options (already checked by ``config.check_live``)."""
        if diagnostics is not None:
            self.enabled = diagnostics
        if diagnostics_every is not None:
            self.every = diagnostics_every
        if ntk_every is not None:
            self.ntk_every = ntk_every
        if self._probe is not None:
            self._probe.configure(enabled=self.enabled, every=self.every, ntk_every=self.ntk_every)

    def ready(self) -> None:
        """Build the Hessian/NTK helper before a chunk that takes readings."""
        if self._probe is None:
            self._probe = self._make_probe()

    def _make_probe(self) -> Diagnostics:
        d = self.cfg.diagnostics
        data = self.data
        tr = data.train
        # the full batch of a small vector data set (the spiral, MNIST-1D); otherwise a
        # fixed batch of 1000 samples spread over the training set (images normalised)
        whole = data.image is None and tr.n <= FULL_BATCH_MAX
        idx = slice(None) if whole else slice(None, None, max(1, tr.n // 1000))
        x = data.inputs(tr.x[idx][:1000] if not whole else tr.x, self.dtype)
        y = tr.y[idx][:1000] if not whole else tr.y
        return Diagnostics(self.model, x, y, enabled=True, every=self.every, iters=d.iters, k=d.k,
                           ntk_every=self.ntk_every, ntk_size=d.ntk_size, seed=self.cfg.run.seed,
                           loss=self.cfg.loss.kind)

    def measure(self, step: int, gamma: np.ndarray, lr: float) -> list[float]:
        """The diag row of Hessian/NTK λ_max at the parameters update ``step`` is about
        to use, with its Γ."""
        self.ready()
        g = torch.as_tensor(gamma, dtype=self.dtype, device=self.device)
        with self.alone():
            out = self._probe.compute(g, step)
        lam = out["hessian_lambda_max"]
        row = [float(step), lam, out["ntk_lambda_max"], lr, float(out["hessian_iters"]),
               out["seconds"]]
        k = self.cfg.diagnostics.k
        if k > 1:
            top = list(out["hessian_top"])[:k]
            row += top + [float("nan")] * (k - len(top))
        if np.isfinite(lam):
            self._track_edge_of_stability(step, lam, lr)
        return row

    def _track_edge_of_stability(self, step: int, lam: float, lr: float) -> None:
        """Log when λ_max settles on the other side of the optimiser's stability line
        (none for Adam: nothing is logged).  Inside the edge-of-stability oscillation
        λ_max flips sides every reading; requiring a few readings in a row keeps the
        log to real crossings, dated at the first."""
        bound = self.edge.at(lr) if self.edge is not None else None
        if bound is None:
            return
        above = lam > bound
        if self._above is None:
            self._above, self._pending = above, []
            return
        if above == self._above:
            self._pending = []
            return
        self._pending.append((step, lam))
        if len(self._pending) >= EOS_CONFIRM:
            first, lam0 = self._pending[0]
            self._above, self._pending = above, []
            side = "above" if above else "below"
            self.on_event("edge_of_stability",
                          f"edge of stability crossed at update {first}: λ_max {lam0:.4g} went "
                          f"{side} {self.edge.label} = {bound:.4g}", step=first, lambda_max=lam0,
                          lr=lr)
