"""Data sets, resident on the training device.

The spiral is drawn exactly as the authors' notebook: numpy's legacy RNG seeded
once, class by class, r = linspace(0, 1, n), θ = linspace(2πj/C, 2πj/C + 2π·turns, n)
+ noise·N(0, 1), x = (r cos θ, r sin θ).  ``tests/test_math.py`` checks it bit for
bit against ``shared/reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig


def make_spiral(points_per_class: int, classes: int, turns: float, noise: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    xs, ys = [], []
    for j in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class)
        start = 2 * np.pi * j / classes
        theta = np.linspace(start, start + 2 * np.pi * turns, points_per_class)
        theta = theta + rng.randn(points_per_class) * noise
        xs.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
        ys.append(np.full(points_per_class, j, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


@dataclass
class Split:
    x: torch.Tensor  # (N, features) on the device
    y: torch.Tensor  # (N,) int64 on the device

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    train: Split
    val: Split | None
    classes: int
    in_features: int


def load(cfg: DataConfig, device: torch.device, dtype: torch.dtype) -> Dataset:
    if cfg.name != "spiral":  # config validation makes this unreachable today
        raise ValueError(f"unknown data set {cfg.name!r}")

    def split(seed: int, n: int) -> Split:
        x, y = make_spiral(n, cfg.classes, cfg.turns, cfg.noise, seed)
        return Split(torch.as_tensor(x, dtype=dtype, device=device),
                     torch.as_tensor(y, device=device))

    train = split(cfg.seed, cfg.points_per_class)
    val = None
    if cfg.val_seed >= 0:
        val = split(cfg.val_seed, cfg.val_points_per_class or cfg.points_per_class)
    return Dataset(train, val, cfg.classes, 2)
