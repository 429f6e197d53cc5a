"""Where a run's updates stop being stable, as a bound on the Hessian's λ_max,
for the optimiser the run uses (the sharpness chart's line, the status bar,
``export --png`` and the engine's edge-of-stability events).  No textual, no torch:
plain arithmetic on the config.

* Gradient descent, step η: stable while λ_max < 2/η.
* Heavy-ball momentum β (``optim.name = "sgd"``, PyTorch's SGD: v ← βv + g,
  θ ← θ − ηv): on a quadratic the iteration is stable while
  λ_max < 2(1+β)/η (full batch; with mini-batches a reference line).
* Adam: no such line for the raw Hessian; what matters is the preconditioned
  sharpness (Cohen et al. 2022, "Adaptive gradient methods at the edge of
  stability"), which this project does not measure.
* A run of your own loop (``optim.name = "external"``): the optimiser is not
  recorded, so no line.

Weight decay would shift the bound by its coefficient (λ_max + wd < …); the
line leaves it out (5e-4 against bounds of order 1–100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Edge:
    """λ_max < ``factor`` / η; ``label`` names the line (``2/η``, ``2(1+β)/η``)."""

    factor: float
    label: str
    note: str = ""  # e.g. "β = 0.9"

    def at(self, lr: Any) -> float | None:
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            return None
        return self.factor / lr if lr > 0 and math.isfinite(lr) else None


@dataclass(frozen=True)
class Stability:
    edge: Edge | None
    why_none: str = ""  # when there is no line: why (one short line)


def _number(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def stability(config: dict[str, Any] | None) -> Stability:
    """The stability line of a run, from its config (the hello's or config.toml's
    ``optim`` table; missing: plain gradient descent, the config's default)."""
    optim = (config or {}).get("optim")
    optim = optim if isinstance(optim, dict) else {}
    name = str(optim.get("name", "gd")).lower()
    if name == "adam":
        return Stability(None, "Adam: no 2/η line (its edge is the preconditioned sharpness)")
    if name == "external":
        return Stability(None, "own training loop: optimiser unknown, no stability line")
    beta = _number(optim.get("momentum"), 0.0) if name == "sgd" else 0.0
    if name not in ("gd", "sgd"):
        return Stability(None, f"optimiser {name!r}: no stability line known")
    if 0.0 < beta < 1.0:
        return Stability(Edge(2.0 * (1.0 + beta), "2(1+β)/η", f"β = {beta:g}"))
    return Stability(Edge(2.0, "2/η"))
