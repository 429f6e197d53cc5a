"""dlf-tui: train with dynamical loss functions and watch and steer the run live.

``from dlf_tui import DynamicalLoss`` (the loss for your own loop) and
``dlf_tui.live.Run`` (watch and steer that loop from the TUI) import torch when
first used; ``import dlf_tui`` alone does not (the TUI never imports torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["DynamicalLoss", "live", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "DynamicalLoss":
        from dlf_tui.engine.loss import DynamicalLoss

        return DynamicalLoss
    if name == "live":
        return importlib.import_module("dlf_tui.live")
    raise AttributeError(f"module 'dlf_tui' has no attribute {name!r}")
