"""Data sets, resident on the training device.

Image sets (``images.py``: CIFAR-10/100, MNIST, Fashion-MNIST via torchvision)
live on the device as uint8 ``(N, C, H, W)``; ``Dataset.image`` says how the
stepper turns a batch of them into normalised (and augmented) float inputs.

The spiral is drawn exactly as the authors' notebook: numpy's legacy RNG seeded
once, class by class, r = linspace(0, 1, n), θ = linspace(2πj/C, 2πj/C + 2π·turns, n)
+ noise·N(0, 1), x = (r cos θ, r sin θ).  ``tests/test_math.py`` checks it bit for
bit against ``shared/reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dlf_tui.core import entries
from dlf_tui.core.config import DataConfig
from dlf_tui.core.errors import SetupError


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
    x: torch.Tensor  # (N, features) float, or (N, C, H, W) uint8 images, on the device
    y: torch.Tensor  # (N,) int64 on the device

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


@dataclass
class ImageSpec:
    """How uint8 images become model inputs: x·scale + shift per channel, after
    an optional random crop (zero padding ``pad``) and horizontal flip."""
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units (training set)
    std: tuple[float, ...]
    crop: bool
    flip: bool
    pad: int
    names: tuple[str, ...] = ()  # class names

    @property
    def augment(self) -> bool:
        return self.crop or self.flip

    def scale_shift(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        std = torch.tensor(self.std, dtype=torch.float64)
        mean = torch.tensor(self.mean, dtype=torch.float64)
        scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        shift = (-mean / std).view(1, -1, 1, 1)
        return scale.to(device, dtype), shift.to(device, dtype)


@dataclass
class Dataset:
    train: Split
    val: Split | None
    classes: int
    in_features: int | tuple[int, ...]  # int (vectors) or (C, H, W) (images)
    image: ImageSpec | None = None
    names: tuple[str, ...] = ()  # class names, when the data set has them

    def inputs(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Float model inputs for rows of a split, without augmentation
        (e.g. for diagnostics): normalised images, or ``x`` itself."""
        if self.image is None:
            return x
        from dlf_tui.engine.images import normalize

        scale, shift = self.image.scale_shift(x.device, dtype)
        return normalize(x, scale, shift, dtype)



def select(cfg: DataConfig, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray | None,
           yte: np.ndarray | None, C: int, what: str = "images"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(train x, y, held-out x, y) of a data set with a training and a test split
    (``xte`` None: none), as ``data.val_split``, ``val_fraction``, ``subset_per_class`` and
    ``val_subset_per_class`` say (drawn with ``data.seed``).  SetupError when they ask
    for more than there is."""
    from dlf_tui.engine import images

    try:
        if cfg.val_split == "holdout" or (cfg.val_split == "test" and xte is None):
            if cfg.val_fraction <= 0:
                raise ValueError(f"data.val_fraction must be > 0 to hold out part of {cfg.name}'s "
                                 f"training set")
            rng = np.random.RandomState(cfg.seed)
            counts = np.bincount(ytr, minlength=C)
            hold = {c: max(1, int(round(cfg.val_fraction * counts[c]))) for c in range(C)}
            # one permutation per class: the first ``hold`` are held out, training
            # samples are drawn from the rest
            orders = [np.flatnonzero(ytr == c)[rng.permutation(counts[c])] for c in range(C)]
            val_idx = np.sort(np.concatenate([o[: hold[c]] for c, o in enumerate(orders)]))
            pool = [o[hold[c]:] for c, o in enumerate(orders)]
            k = cfg.subset_per_class
            for c, p in enumerate(pool):
                if k and p.size < k:
                    raise ValueError(f"data.subset_per_class = {k}: class {c} has only {p.size} "
                                     f"training {what} after the hold-out")
            tr_idx = np.sort(np.concatenate([p[:k] if k else p for p in pool]))
            xval, yval = xtr[val_idx], ytr[val_idx]
            xtr, ytr = xtr[tr_idx], ytr[tr_idx]
        else:
            if cfg.subset_per_class:
                try:
                    idx = images.per_class(ytr, C, cfg.subset_per_class, np.random.RandomState(cfg.seed))
                except ValueError as err:
                    raise ValueError(f"data.subset_per_class = {cfg.subset_per_class}: "
                                     f"{cfg.name} training {err}") from None
                xtr, ytr = xtr[idx], ytr[idx]
            xval, yval = (xte, yte) if cfg.val_split == "test" else (None, None)
        if xval is not None and cfg.val_subset_per_class:
            try:
                idx = images.per_class(yval, C, cfg.val_subset_per_class,
                                       np.random.RandomState(cfg.seed + 1))
            except ValueError as err:
                raise ValueError(f"data.val_subset_per_class = {cfg.val_subset_per_class}: "
                                 f"{cfg.name} held-out {err}") from None
            xval, yval = xval[idx], yval[idx]
    except ValueError as err:
        raise SetupError(str(err)) from None
    if cfg.batch_size > len(ytr):
        raise SetupError(f"data.batch_size = {cfg.batch_size}: larger than the training set "
                         f"({len(ytr)} {what})")
    return xtr, ytr, xval, yval


def load_images(cfg: DataConfig, device: torch.device) -> Dataset:
    from dlf_tui.engine import images

    # DataUnavailable is a SetupError: the engine reports it in one line
    xtr, ytr, xte, yte, names = images.read(cfg.name, cfg.root, cfg.download, cfg.verify)
    C = len(names)
    mean, std = images.channel_stats(xtr)  # the whole official training set
    xtr, ytr, xval, yval = select(cfg, xtr, ytr, xte, yte, C)
    aug = images.SOURCES[cfg.name].augment if cfg.augment == "auto" else cfg.augment
    spec = ImageSpec(tuple(float(v) for v in mean), tuple(float(v) for v in std),
                     crop="crop" in aug and cfg.crop_padding > 0, flip="flip" in aug,
                     pad=cfg.crop_padding, names=tuple(names))

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))

    train = split(xtr, ytr)
    val = split(xval, yval) if xval is not None and len(yval) else None
    return Dataset(train, val, C, tuple(int(v) for v in xtr.shape[1:]), spec, names=tuple(names))


def load_vectors(cfg: DataConfig, device: torch.device, dtype: torch.dtype) -> Dataset:
    """MNIST-1D (generated: seed 42 + data.seed, 0 = the published data set) or
    scikit-learn's digits (no test split of its own: ``val_split = "test"`` holds out
    ``val_fraction`` of each class)."""
    if cfg.name == "mnist1d":
        from dlf_tui.engine import mnist1d

        d = mnist1d.generate(mnist1d.SEED + cfg.seed)
        xtr, ytr, xte, yte, names = d.x_train, d.y_train, d.x_test, d.y_test, d.class_names
    else:
        from dlf_tui.engine import digits

        (xtr, ytr), xte, yte, names = digits.read(), None, None, digits.CLASS_NAMES
    C = len(names)
    xtr, ytr, xval, yval = select(cfg, xtr, ytr, xte, yte, C, what="samples")

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(y, device=device))

    val = split(xval, yval) if xval is not None and len(yval) else None
    return Dataset(split(xtr, ytr), val, C, int(xtr.shape[1]), names=tuple(names))


VECTOR_SETS = ("mnist1d", "digits")


def is_user_data(cfg: DataConfig) -> bool:
    """``data.name`` names the user's own loader (``engine/user_data.py`` loads it)."""
    return entries.is_entry_text(cfg.name) or cfg.name in entries.plugins("data")


def load(cfg: DataConfig, device: torch.device, dtype: torch.dtype) -> Dataset:
    """The configured built-in data set on ``device``: spiral points and vectors as
    ``dtype``, images as uint8."""
    if cfg.name == "external":
        raise SetupError("data.name = external: this run records your own training loop "
                         "(dlf_tui.live); continue it from your script with "
                         "Run(..., resume='latest'), not with the engine")
    if cfg.name in VECTOR_SETS:
        return load_vectors(cfg, device, dtype)
    if cfg.name != "spiral":
        return load_images(cfg, device)

    def split(seed: int, n: int) -> Split:
        x, y = make_spiral(n, cfg.classes, cfg.turns, cfg.noise, seed)
        return Split(torch.as_tensor(x, dtype=dtype, device=device),
                     torch.as_tensor(y, device=device))

    train = split(cfg.seed, cfg.points_per_class)
    val = None
    if cfg.val_seed >= 0:
        val = split(cfg.val_seed, cfg.val_points_per_class or cfg.points_per_class)
    return Dataset(train, val, cfg.classes, 2)
