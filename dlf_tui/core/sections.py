"""A run configuration's sections: frozen dataclasses, one per TOML table.

Each key's field holds its default, its range rule (``metadata["check"]``, applied
by ``config.check_value``) and its help line.  Reading, checking and writing a
configuration is ``config.py``'s work; this module only says what there is.  No torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, get_type_hints


# ---------------------------------------------------------------------------
# Sections.  ``metadata["check"]`` holds the range rule shared by files,
# ``--set`` flags and live ``set`` commands (see ``check_value``).
# ---------------------------------------------------------------------------


def _f(default: Any, check: str | None = None, help: str = "") -> Any:
    kw: dict[str, Any] = {"metadata": {"check": check, "help": help}}
    if isinstance(default, (list, tuple)):
        kw["default_factory"] = lambda d=tuple(default): d
    elif isinstance(default, dict):
        kw["default_factory"] = dict
    else:
        kw["default"] = default
    return field(**kw)


@dataclass(frozen=True)
class DataConfig:
    name: str = _f("spiral", "entry:data:spiral,mnist1d,digits,cifar10,cifar100,mnist,fashion-mnist,external",
                   "data set, or your own loader \"./file.py:load\" / \"pkg.module:load\" / a plugin's name "
                   "(external = a run of your own training loop, dlf_tui.live)")
    args: dict = _f({}, "table", "keyword arguments of your own loader (the [data.args] table)")
    points_per_class: int = _f(100, ">=1", "spiral points per class")
    classes: int = _f(3, ">=2", "number of classes (spiral arms; image sets have their own)")
    turns: float = _f(2.0, ">0", "spiral arm length in full turns (2 = 4*pi)")
    noise: float = _f(0.2, ">=0", "std of the angle noise")
    seed: int = _f(0, ">=0", "data seed: the spiral's numpy legacy seed; MNIST-1D's is 42 + this (0 = the published set); the subsets' and held-out split's seed")
    val_seed: int = _f(-1, ">=-1", "numpy seed of a held-out spiral (-1 = none)")
    val_points_per_class: int = _f(0, ">=0", "held-out points per class (0 = same as training)")
    eval_every: int = _f(100, ">=1", "evaluate the held-out set every N updates")
    batch_size: int = _f(0, ">=0", "mini-batch size (0 = full batch)")
    root: str = _f("~/.cache/dlf-tui/data", None, "image data: torchvision's root directory (~ expanded)")
    download: bool = _f(True, None, "image data: download the files into data.root when missing (--offline or DLF_TUI_OFFLINE=1: never)")
    verify: bool = _f(True, None, "image data: check the CIFAR files' md5 sums (torchvision's integrity check)")
    val_split: str = _f("test", "choice:test,holdout,none", "image data, mnist1d, digits: held-out set = the official test set (digits has none: a held-out part), a held-out part of train, or none")
    val_fraction: float = _f(0.1, "[0,1)", "image data, val_split = holdout: fraction of each class held out of train")
    subset_per_class: int = _f(0, ">=0", "image data: training images per class (0 = all), drawn with data.seed")
    val_subset_per_class: int = _f(0, ">=0", "image data: held-out images per class (0 = all), drawn with data.seed")
    augment: str = _f("auto", "choice:auto,none,flip,crop,crop-flip", "image data: on-device augmentation per step (auto = crop-flip for CIFAR, none for MNIST)")
    crop_padding: int = _f(4, ">=0", "image data: zero padding of the random crop, in pixels")
    eval_batch_size: int = _f(1000, ">=1", "evaluate the held-out set in batches of N samples")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _f("mlp", "entry:model:mlp,myrtle5,myrtle7,myrtle10,resnet18,external",
                   "model family (mlp flattens image inputs), or your own factory \"./file.py:build\" / "
                   "\"pkg.module:build\" / a plugin's name (external = your own loop's model)")
    args: dict = _f({}, "table", "keyword arguments of your own factory (the [model.args] table)")
    hidden: tuple[int, ...] = _f((100,), "widths>=1", "hidden layer widths (mlp)")
    activation: str = _f("relu", "choice:relu", "hidden activation")
    init: str = _f("glorot", "choice:glorot,torch,he", "built-in models: glorot = the reference's truncated-normal Glorot; torch = PyTorch default; he = N(0, 2/fan_in), zero biases (your own factory's init is kept)")
    width: int = _f(128, ">=1", "channels of every conv layer (myrtle5/7/10)")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = _f("triangle", "choice:triangle,sine,square,static", "shape of the oscillation")
    amplitude: float = _f(70.0, ">=1,<=1e6", "peak raw weight A of the emphasised class (1 = plain CE)")
    period: int = _f(5000, ">=1", "period T (a period is T+1 updates)")
    last_period_static: bool = _f(True, None, "switch to A=1 at the first period boundary after step > steps - T")


@dataclass(frozen=True)
class LossConfig:
    kind: str = _f("ce", "choice:ce,mse",
                   "ce = Γ-weighted cross-entropy; mse = Γ-weighted squared error to the one-hot target "
                   "(ours: F = mean Γ[y]·‖f(x) − e_y‖²)")


@dataclass(frozen=True)
class OptimConfig:
    name: str = _f("gd", "choice:gd,sgd,adam,external",
                   "gd = plain gradient descent; external = your own loop's optimizer")
    lr: float = _f(1.0, ">0", "learning rate")
    momentum: float = _f(0.0, "[0,1)", "SGD momentum")
    weight_decay: float = _f(0.0, ">=0", "L2 weight decay")


@dataclass(frozen=True)
class RunConfig:
    steps: int = _f(70000, ">=1", "number of updates")
    seed: int = _f(0, ">=0", "torch seed of the initial weights and batches")
    dtype: str = _f("float64", "choice:float32,float64", "floating point type")
    device: str = _f("auto", "device", "auto, cpu, cuda or cuda:N")
    threads: int = _f(1, ">=0", "torch CPU threads (0 = torch default)")
    flush_every: int = _f(2048, ">=1", "flush metrics at least every N updates")
    flush_seconds: float = _f(0.1, ">0", "... or every S seconds, whichever is first")
    checkpoint_every: int = _f(0, ">=0", "periodic checkpoint every N updates (0 = off)")
    fused: bool = _f(True, None, "use the hand-fused full-batch GD step when it applies")
    amp: str = _f("off", "choice:off,bf16", "autocast the forward pass to bfloat16 (autograd stepper)")
    channels_last: bool = _f(False, None, "conv models: channels-last memory format")
    compile: bool = _f(False, None, "torch.compile the model's step (autograd stepper; first updates are slow)")
    pace: float = _f(0.0, ">=0,<=1e9", "updates per second at most (0 = as fast as possible); pace only waits: the trajectory is the same")


@dataclass(frozen=True)
class DiagnosticsConfig:
    enabled: bool = _f(False, None, "compute the Hessian's top eigenvalue during training")
    every: int = _f(501, ">=1", "Hessian λ_max every N updates (keep it odd: past 2/η GD oscillates with period 2)")
    iters: int = _f(20, ">=1", "Lanczos iterations (at most)")
    k: int = _f(1, ">=1", "how many top eigenvalues")
    ntk_every: int = _f(0, ">=0", "NTK λ_max every N updates (0 = off)")
    ntk_size: int = _f(100, ">=1", "samples in the fixed NTK subset")


@dataclass(frozen=True)
class ForkConfig:
    """Written by ``dlf-tui fork`` (``store/fork.py``): where a fork's parameters came from."""

    parent: str = _f("", None, "the run directory this run was forked from (\"\" = not a fork)")
    at: int = _f(0, ">=0", "the update it was forked at: its updates 1…at are the parent's")


@dataclass(frozen=True)
class SweepConfig:
    """Read by ``dlf-tui sweep`` only; a single run ignores it (see ``store/sweep.py``)."""

    grid: tuple[str, ...] = _f((), "grid", "axes: \"section.key=v1,v2,...\" each; members are their cross product × seeds")
    seeds: int = _f(1, ">=1,<=4096", "seeds per cell: run.seed, run.seed+1, ...")
    threshold: float = _f(0.95, ">0,<=1", "summary: fraction of seeds whose final accuracy is >= this")


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    fork: ForkConfig = field(default_factory=ForkConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "schedule": ScheduleConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "diagnostics": DiagnosticsConfig,
    "fork": ForkConfig,
    "sweep": SweepConfig,
}
TOP_KEYS = ("name", "description")


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return get_type_hints(SECTIONS[section])  # evaluates the annotations: once per section


def type_of(section: str, key: str) -> Any:
    """The annotated type of ``section.key`` (``int``, ``float``, ``tuple[int, ...]`` …)."""
    return _hints(section)[key]
