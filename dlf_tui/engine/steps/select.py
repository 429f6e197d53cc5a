"""Choosing the stepper for a run, and the size of its per-chunk tables.

One training update, several implementations with the same contract
(``base.py``: one statistics row per update in a device buffer, no host sync):

- ``FusedMLPStep`` (``fused.py``): full-batch gradient descent on an MLP with
  the backward pass written out by hand, parameters and gradients in one flat
  tensor.
- ``CKernelMLPStep`` (``ckernel.py``): the same update as one call into a small
  C kernel compiled at first use (CPU, one hidden layer).
- ``AutogradStep`` (``autograd.py``): any model, mini-batches, SGD with momentum
  or Adam, image data, bf16 autocast, channels-last, torch.compile; and the one
  path of a run across several processes.

``make`` picks the most specialised one that computes the config exactly;
``tests/test_math.py`` and ``tests/test_ckernel.py`` prove they agree (1e-10, float64).
"""

from __future__ import annotations

import logging

from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine.steps.autograd import AutogradStep
from dlf_tui.engine.steps.base import Stepper
from dlf_tui.engine.steps.fused import FusedMLPStep

log = logging.getLogger("dlf_tui.engine")
TABLE_ELEMENTS = 1 << 22  # cap on the per-chunk (rows × C × N) weight table


def wants_fused(cfg: Config, data: Dataset) -> bool:
    """Full-batch GD on an MLP over vector data: the hand-fused update applies."""
    return (cfg.run.fused and cfg.optim.name == "gd" and cfg.optim.weight_decay == 0
            and cfg.data.batch_size == 0 and cfg.model.kind == "mlp"
            and data.image is None  # images need the per-step input pipeline
            and cfg.run.amp == "off" and not cfg.run.compile)  # options only autograd has


def make(cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int, group=None) -> Stepper:
    """The most specialised stepper that computes this config exactly: the C kernel
    (CPU, one hidden layer), else the fused torch step, else autograd.  A rank of a
    distributed run (``group``) always trains through autograd + DDP."""
    fused = wants_fused(cfg, data)
    if group is not None:
        if fused:
            log.info("fused step not used: %d ranks train through autograd and "
                     "DistributedDataParallel (the fused steps are single-process)", group.world)
        return AutogradStep(cfg, model, data, chunk_rows, group=group)
    if fused and data.train.x.device.type == "cpu":
        why = ckernel.unusable_reason(cfg, model, data.train.x.device)
        if not why:
            return ckernel.CKernelMLPStep(cfg, model, data, chunk_rows)
        if len(model.layers) == 2:
            log.info("C kernel not used: %s", why)
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
