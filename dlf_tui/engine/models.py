"""Models.  ``MLP`` keeps torch.nn.Linear's layout (weight is out × in).

- ``MLP``: vectors, or images flattened (MNIST-like data).
- ``Myrtle``: the Myrtle-5/7/10 conv nets of Shankar et al. 2020 ("Neural kernels
  without tangents"), as in neural-tangents: three stages of 2-1-1 / 2-2-2 / 3-3-3
  conv 3×3 (same padding) + ReLU layers, all ``width`` channels (the first conv of
  stage 1 takes the image channels), 2×2 average pooling after each stage,
  average pooling to 1×1, and a linear head; depth = convs + 1.
- torchvision's ResNet-18 adapted to 32×32 inputs: 3×3 stride-1 stem, no max-pool.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlf_tui.core import entries
from dlf_tui.core.config import ModelConfig
from dlf_tui.core.errors import SetupError

# JAX's glorot_normal draws a normal truncated at ±2σ, rescaled so that the
# truncated distribution has the requested std; this is that constant.
_TRUNC_STD = 0.87962566103423978


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_out, fan_in) of a Linear (out × in) or Conv (out × in × k × k) weight."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[0] * receptive, weight.shape[1] * receptive


def glorot_truncated_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    fan_out, fan_in = _fans(weight)
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
        if x.dim() > 2:  # images (N, C, H, W) → vectors
            x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


MYRTLE_STAGES = {"myrtle5": (2, 1, 1), "myrtle7": (2, 2, 2), "myrtle10": (3, 3, 3)}


class Myrtle(nn.Module):
    """Myrtle-5/7/10: ``stages`` conv 3×3 + ReLU layers per stage, avg-pool 2×2
    after each stage, global average pooling to 1×1, linear head."""

    def __init__(self, in_channels: int, width: int, classes: int, stages: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for n in stages:
            for _ in range(n):
                layers += [nn.Conv2d(ch, width, 3, padding=1), nn.ReLU()]
                ch = width
            layers.append(nn.AvgPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_32(in_channels: int, classes: int) -> nn.Module:
    """torchvision's ResNet-18 for 32×32 images: 3×3 stride-1 stem, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    model.maxpool = nn.Identity()
    return model


def _shape(in_features: int | tuple[int, ...]) -> tuple[int, ...]:
    return (in_features,) if isinstance(in_features, int) else tuple(in_features)


def _init_(model: nn.Module, init: str, gen: torch.Generator) -> None:
    """Re-initialise every Linear/Conv layer (norm layers keep their defaults).
    Draws on the CPU in float64, so the result is the same on every device."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for layer in layers:
        with torch.no_grad():
            if init == "glorot":
                glorot_truncated_(layer.weight, gen)
            else:  # he: N(0, 2/fan_in); the linear head N(0, 1/fan_in)
                gain = 1.0 if layer is layers[-1] else 2.0
                w = torch.empty(layer.weight.shape, dtype=torch.float64)
                w.normal_(0.0, math.sqrt(gain / _fans(layer.weight)[1]), generator=gen)
                layer.weight.copy_(w)
            if layer.bias is not None:
                b = torch.empty(layer.bias.shape, dtype=torch.float64)
                if init == "glorot":
                    b.normal_(0.0, 0.01, generator=gen)
                else:
                    b.zero_()
                layer.bias.copy_(b)


def is_user_model(cfg: ModelConfig) -> bool:
    return entries.is_entry_text(cfg.kind) or cfg.kind in entries.plugins("model")


def build(cfg: ModelConfig, in_features: int | tuple[int, ...], classes: int, seed: int,
          device: torch.device, dtype: torch.dtype, code=None) -> nn.Module:
    """The configured model on ``device``; ``in_features`` is an int (vectors) or
    an input shape (C, H, W).  A user's factory (through ``code``, a
    ``user_code.UserCode``) is called as ``factory(input_shape, classes, **args)``
    with torch seeded by ``seed``; its own initialisation is kept."""
    gen = torch.Generator().manual_seed(seed)
    shape = _shape(in_features)
    if is_user_model(cfg):
        from dlf_tui.engine import user_code

        code = code or user_code.UserCode()
        fn = code.function("model", cfg.kind)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = code.call("model", cfg.kind, fn, shape, classes, **cfg.args)
        if not isinstance(model, nn.Module):
            raise user_code.UserCodeError(
                f"{code.where('model', cfg.kind)}: {getattr(fn, '__name__', 'the factory')}() "
                f"returned {type(model).__name__}, not a torch.nn.Module")
        if not any(True for _ in model.parameters()):
            raise user_code.UserCodeError(f"{code.where('model', cfg.kind)}: the model has no parameters")
        return model.to(device=device, dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # PyTorch's default init draws from the global RNG
        if cfg.kind == "mlp":
            model: nn.Module = MLP(math.prod(shape), cfg.hidden, classes)
        else:
            if len(shape) != 3:
                raise SetupError(f"model.kind = {cfg.kind}: a conv net needs image data (data.name = "
                                 f"cifar10, cifar100, mnist or fashion-mnist)")
            if cfg.kind in MYRTLE_STAGES:
                model = Myrtle(shape[0], cfg.width, classes, MYRTLE_STAGES[cfg.kind])
            elif cfg.kind == "resnet18":
                model = resnet18_32(shape[0], classes)
            else:  # pragma: no cover - config validation
                raise ValueError(f"unknown model {cfg.kind!r}")
    if cfg.init != "torch":
        _init_(model, cfg.init, gen)
    return model.to(device=device, dtype=dtype)


def check_outputs(model: nn.Module, x: torch.Tensor, classes: int, where: str) -> None:
    """A user model's forward on a few training inputs gives (n, classes) floats; what
    it raises, or a wrong output, is one line naming the entry."""
    from dlf_tui.engine.user_code import UserCodeError, raised

    n = min(8, x.shape[0])
    was = model.training
    try:
        with torch.no_grad():
            out = model(x[:n])
    except Exception as err:  # noqa: BLE001 - the user's forward raised
        raise UserCodeError(f"{where}: the model's forward raised {raised(err)}") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor):
        raise UserCodeError(f"{where}: the model returned {type(out).__name__}, not a tensor "
                            f"of shape (N, {classes})")
    if tuple(out.shape) != (n, classes):
        raise UserCodeError(f"{where}: the model's output has shape {tuple(out.shape)} for "
                            f"{n} inputs: needs ({n}, {classes}), one score per class")
    if not out.is_floating_point():
        raise UserCodeError(f"{where}: the model's output is {out.dtype}: needs floating point")


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
