"""The dynamical loss, as a library: ``from dlf_tui import DynamicalLoss``.

F = mean over samples of Γ[label]·CE(sample) (``loss="ce"``), or
F = mean over samples of Γ[label]·‖f(x) − e_label‖² (``loss="mse"``, f the raw
outputs, e the one-hot target).  This is *not* ``F.cross_entropy(weight=Γ)``,
whose mean divides by ΣΓ[y] instead of the number of samples.

Γ(t) is ``core.schedule.Schedule`` — the engine's own schedule, bit-exact
against the authors' reference — and the loss functions below are the ones the
engine's autograd step and its Hessian diagnostics use.

Devices, dtypes, compilers:
- Γ lives on the device and in the dtype of the last logits (a table of the
  next updates' rows is copied there once per ``TABLE_ROWS`` updates, not per
  update); under autocast, half-precision outputs are computed in float32.
- ``forward`` reads Γ from a fixed buffer that ``step()`` fills, so under
  ``torch.compile`` the graph does not change from one update to the next.
- With DistributedDataParallel every rank computes its own mean and steps its
  own identical schedule: nothing to synchronise.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch import nn

from dlf_tui.core import config as cfgmod
from dlf_tui.core.schedule import KINDS, Schedule

LOSSES = ("ce", "mse")
TABLE_ROWS = 1024  # Γ rows copied to the device at a time (fewer for many classes)


def _table_rows(classes: int) -> int:
    return max(16, min(TABLE_ROWS, (1 << 20) // classes))


def _whole(name: str, value: Any, low: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} = {value!r}: needs an integer >= {low}") from None
    if value < low:
        raise ValueError(f"{name} = {value!r}: needs an integer >= {low}")
    return value


def weighted_loss(neg_loss: torch.Tensor, gamma_target: torch.Tensor,
                  scale: float | None = None) -> torch.Tensor:
    """mean_n Γ[y_n]·ℓ_n from per-sample −ℓ_n (``neg_sample_loss``) and Γ[y] (``scale``:
    the sum times ``scale`` instead of the mean — a rank's share of a global mean)."""
    weighted = gamma_target * neg_loss
    return -weighted.mean() if scale is None else -weighted.sum() * scale


def as_float(outputs: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (autocast) read in float32; others as they are."""
    return outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs


def log_p_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample log p(y_n) = −CE_n."""
    return logits.log_softmax(1).gather(1, targets[:, None])[:, 0]


def dynamical_ce(logits: torch.Tensor, targets: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """F = mean_n Γ[y_n]·CE_n (static cross-entropy is Γ ≡ 1)."""
    return weighted_loss(log_p_target(logits, targets), gamma[targets])


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖f(x_n) − e_{y_n}‖² (f the raw outputs, e the one-hot target)."""
    err = outputs - nn.functional.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return (err * err).sum(1)


def dynamical_mse(outputs: torch.Tensor, targets: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """F = (1/N) Σ_n Γ[y_n]·‖f(x_n) − e_{y_n}‖²."""
    return weighted_loss(-squared_error(outputs, targets), gamma[targets])


def neg_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample −ℓ_n: log p(y_n) for ``"ce"``, −‖f − e_y‖² for ``"mse"`` — what the
    first C slots of a statistics row sum per class (``steps/base.py``)."""
    if loss == "mse":
        return -squared_error(outputs, targets)
    return log_p_target(outputs, targets)


class _Cursor:
    """What changes every update, outside nn.Module's attribute machinery."""

    __slots__ = ("row", "neg_loss")

    def __init__(self) -> None:
        self.row = 0  # the current update's row of the Γ table
        self.neg_loss: torch.Tensor | None = None  # the last forward's per-sample −ℓ, detached


class DynamicalLoss(nn.Module):
    """``loss_fn(logits, targets)`` → F at the current Γ; ``loss_fn.step()`` after each
    update moves Γ on.

    ``set_amplitude`` / ``set_period`` are live edits with the engine's rules (checked
    like ``dlf-tui ctl set``; a new T keeps the fraction of the period done; an
    amplitude edit ends the automatic plain-loss tail).  ``state_dict()`` carries the
    schedule as plain data (``get_extra_state``), so the loss checkpoints as a
    submodule of any model and loads with ``torch.load(weights_only=True)``.

    Targets are class indices 0…C−1 (checked on the CPU; on an accelerator the
    check would cost a device sync, so it is left out).  float16/bfloat16 outputs
    (autocast) are promoted: the loss is computed in float32.
    """

    def __init__(self, classes: int, amplitude: float = 1.0, period: int = 1000,
                 kind: str = "triangle", loss: str = "ce", last_period_static: bool = False,
                 total_steps: int = 0):
        """``amplitude`` A (1 = plain loss), ``period`` T (a period is T+1 updates),
        ``kind`` the shape of the oscillation; with ``last_period_static`` the
        amplitude becomes 1 at the first period boundary after
        ``total_steps`` − T updates."""
        super().__init__()
        classes = _whole("classes", classes, 2)
        if kind not in KINDS:
            raise ValueError(f"kind = {kind!r}: one of {', '.join(KINDS)}")
        if loss not in LOSSES:
            raise ValueError(f"loss = {loss!r}: one of {', '.join(LOSSES)}")
        total_steps = _whole("total_steps", total_steps, 0)
        if last_period_static and not total_steps:
            raise ValueError("last_period_static needs total_steps (when the last period starts)")
        amplitude = cfgmod.check_live("amplitude", amplitude)
        period = cfgmod.check_live("period", period)
        self.loss_kind = loss
        self.schedule = Schedule.create(kind, amplitude, period, classes, total_steps,
                                        bool(last_period_static))
        self._host = np.empty((0, classes))  # Γ rows of the next updates, from the current one
        self._at = _Cursor()
        self._table = torch.empty(0)
        self.register_buffer("_gamma", torch.ones(classes), persistent=False)
        self._fill()

    # -- the schedule --------------------------------------------------------------------
    @property
    def classes(self) -> int:
        return self.schedule.s.classes

    @property
    def kind(self) -> str:
        return self.schedule.s.kind

    @property
    def amplitude(self) -> float:
        """The amplitude in force for the current update (1 in the static tail)."""
        return self.schedule.amplitude

    @property
    def period(self) -> int:
        return self.schedule.s.period

    @property
    def phase(self) -> int:
        return self.schedule.s.t

    @property
    def emphasised(self) -> int:
        return self.schedule.s.c

    @property
    def steps_done(self) -> int:
        return self.schedule.s.step

    @property
    def gamma(self) -> torch.Tensor:
        """Γ of the current update (a copy, on the last logits' device and dtype)."""
        return self._gamma.clone()

    @property
    def gamma_host(self) -> np.ndarray:
        """Γ of the current update as float64 numpy (read-only; no device sync)."""
        return self._host[self._at.row]

    def step(self) -> None:
        """One update done: the schedule moves on."""
        self.schedule.advance(1)
        at = self._at
        at.row += 1
        if at.row >= len(self._host):
            self._fill()
        else:
            self._gamma.copy_(self._table[at.row])

    def set_amplitude(self, amplitude: float) -> None:
        """From the next forward on (an edit ends the automatic plain-loss tail)."""
        self.schedule.edit_amplitude(cfgmod.check_live("amplitude", amplitude))
        self._fill()

    def set_period(self, period: int) -> None:
        """Phase-continuous: the fraction of the period done is kept."""
        self.schedule.set_period(cfgmod.check_live("period", period))
        self._fill()

    def _fill(self) -> None:
        """Γ of the next ``TABLE_ROWS`` updates, on the host and on the device."""
        self._host = self.schedule.table(_table_rows(self.classes))[0]
        self._host.setflags(write=False)
        self._at.row = 0
        self._fill_device()

    def _fill_device(self) -> None:
        """The device copy of the host table, in Γ's dtype; Γ ← the current row."""
        self._table = torch.tensor(self._host, dtype=self._gamma.dtype, device=self._gamma.device)
        self._gamma.copy_(self._table[self._at.row])

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .double(): the table follows Γ
        out = super()._apply(fn, recurse)
        self._fill_device()
        return out

    def _follow(self, x: torch.Tensor) -> None:
        """Keep Γ on the device and in the dtype of ``x``."""
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        if self._gamma.device != x.device or self._gamma.dtype != dtype:
            self._gamma = torch.empty(self.classes, dtype=dtype, device=x.device)
            self._fill_device()
        elif self._table.device != x.device or self._table.dtype != dtype:
            self._fill_device()

    # -- the loss --------------------------------------------------------------------------
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.classes:
            raise ValueError(f"logits of shape {tuple(logits.shape)}: need (N, {self.classes})")
        logits = as_float(logits)  # autocast: computed in float32
        self._follow(logits)
        targets = targets.reshape(-1).long()
        if targets.numel() != logits.shape[0]:
            raise ValueError(f"{targets.numel()} targets for {logits.shape[0]} outputs")
        if targets.device.type == "cpu" and targets.numel() and not torch.compiler.is_compiling():
            lo, hi = int(targets.min()), int(targets.max())  # no device sync on the CPU
            if lo < 0 or hi >= self.classes:
                raise ValueError(f"targets in {lo}..{hi}: labels must be 0..{self.classes - 1}")
        neg = neg_sample_loss(logits, targets, self.loss_kind)
        self._at.neg_loss = neg.detach()  # a live run's statistics reuse it
        return weighted_loss(neg, self._gamma[targets])

    @property
    def last_neg_sample_loss(self) -> torch.Tensor | None:
        """Per-sample −ℓ of the last forward, detached: log p(y) (ce) or −‖f − e_y‖² (mse)."""
        return self._at.neg_loss

    # -- checkpoints (plain data: torch.load(weights_only=True) reads it) -------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "loss": self.loss_kind}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        try:
            schedule = Schedule.from_state_dict(dict(state["schedule"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a DynamicalLoss state: {err}") from None
        loss = state.get("loss", self.loss_kind)
        if schedule.s.classes != self.classes:
            raise ValueError(f"a state for {schedule.s.classes} classes, not {self.classes}")
        if loss not in LOSSES:
            raise ValueError(f"loss = {loss!r}: one of {', '.join(LOSSES)}")
        self.schedule, self.loss_kind = schedule, loss
        self._fill()

    def extra_repr(self) -> str:
        s = self.schedule.s
        return (f"classes={s.classes}, amplitude={s.amplitude:g}, period={s.period}, "
                f"kind={s.kind!r}, loss={self.loss_kind!r}")
