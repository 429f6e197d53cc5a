"""Models.  ``MLP`` keeps torch.nn.Linear's layout (weight is out × in)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig

# JAX's glorot_normal draws a normal truncated at ±2σ, rescaled so that the
# truncated distribution has the requested std; this is that constant.
_TRUNC_STD = 0.87962566103423978


def glorot_truncated_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    fan_out, fan_in = weight.shape
    std = math.sqrt(2.0 / (fan_in + fan_out)) / _TRUNC_STD
    with torch.no_grad():
        # sample in float64 on the CPU so the init is the same on every device
        w = torch.empty(weight.shape, dtype=torch.float64)
        nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
        weight.copy_(w)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: tuple[int, ...], classes: int):
        super().__init__()
        widths = [in_features, *hidden, classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def build(cfg: ModelConfig, in_features: int, classes: int, seed: int,
          device: torch.device, dtype: torch.dtype) -> MLP:
    gen = torch.Generator().manual_seed(seed)
    if cfg.kind != "mlp":  # pragma: no cover - config validation
        raise ValueError(f"unknown model {cfg.kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # PyTorch's default init draws from the global RNG
        model = MLP(in_features, cfg.hidden, classes)
    if cfg.init == "glorot":
        for layer in model.layers:
            glorot_truncated_(layer.weight, gen)
            with torch.no_grad():
                b = torch.empty(layer.bias.shape, dtype=torch.float64)
                b.normal_(0.0, 0.01, generator=gen)
                layer.bias.copy_(b)
    return model.to(device=device, dtype=dtype)


def load_reference_init(model: MLP, init: dict) -> None:
    """Load the reference's input-major parameters (``W0_in_out`` …) into ``model``."""
    names = sorted({k.split("_")[0][1:] for k in init if k.startswith("W")}, key=int)
    if len(names) != len(model.layers):
        raise ValueError(f"reference has {len(names)} layers, model {len(model.layers)}")
    with torch.no_grad():
        for layer, n in zip(model.layers, names):
            w = torch.tensor(init[f"W{n}_in_out"], dtype=torch.float64).t()
            layer.weight.copy_(w)
            layer.bias.copy_(torch.tensor(init[f"b{n}"], dtype=torch.float64))
