"""Image data sets (CIFAR-10/100, MNIST, Fashion-MNIST) through torchvision.

The files are read by torchvision's own dataset classes, kept whole on the
training device as uint8 ``(N, C, H, W)`` tensors, and turned into float inputs
per mini-batch on the device: an optional batched random crop (zero padding, as
``torchvision.transforms.RandomCrop(padding=p)``) and horizontal flip, then
per-channel normalisation with the training set's mean and std.

The random numbers of an augmentation come from the caller (a seeded device
generator in the stepper), so a run is reproducible and resumes exactly.

``python -m dlf_tui.engine.images download NAME --root DIR`` fetches a data set.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dlf_tui.core.errors import DataUnavailable


@dataclass(frozen=True)
class Source:
    title: str
    cls_name: str  # torchvision.datasets.<cls_name>
    folder: str  # what torchvision expects under the root
    files: tuple[str, ...]  # files that must exist in ``folder``
    augment: str  # what data.augment = "auto" means


SOURCES: dict[str, Source] = {
    "cifar10": Source("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                      "crop-flip"),
    "cifar100": Source("CIFAR-100", "CIFAR100", "cifar-100-python", ("train", "test", "meta"),
                       "crop-flip"),
    "mnist": Source("MNIST", "MNIST", os.path.join("MNIST", "raw"),
                    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), "none"),
    "fashion-mnist": Source("Fashion-MNIST", "FashionMNIST", os.path.join("FashionMNIST", "raw"),
                            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), "none"),
}




def download_command(name: str, root: Path) -> str:
    return f"python -m dlf_tui.engine.images download {name} --root {root}"


def _torchvision_class(name: str, verify: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, SOURCES[name].cls_name)
    if verify or not name.startswith("cifar"):
        return cls
    # torchvision checks the CIFAR files' md5 sums at every load; data.verify = false
    # keeps its reader and existence check but skips the sums (md5 None means
    # "exists" in torchvision.datasets.utils.check_integrity).
    return type(cls.__name__, (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


def read(name: str, root: str | Path, download: bool = False,
         verify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train images, train labels, test images, test labels, class names) as
    numpy: images uint8 (N, C, H, W), labels int64.  Raises ``DataUnavailable``."""
    src = SOURCES[name]
    root = Path(root).expanduser()
    where = root / src.folder
    missing = [f for f in src.files if not (where / f).is_file()]
    how = f"download with: {download_command(name, root)} (or run without --offline)"
    if missing and not download:
        raise DataUnavailable(f"{src.title} not found: expected {where}/{missing[0]} "
                              f"(offline: data.download = false); {how}")
    cls = _torchvision_class(name, verify)
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except Exception as err:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError …
        text = " ".join(str(err).split()) or type(err).__name__
        if len(text) > 160:
            text = text[:157] + "..."
        if missing:
            raise DataUnavailable(f"{src.title}: download into {root} failed ({text}); "
                                  f"on a machine with network run: {download_command(name, root)}, "
                                  f"then copy {where}") from None
        hint = "; or set data.verify = false" if name.startswith("cifar") and verify else ""
        raise DataUnavailable(f"{src.title}: cannot read {where} ({text}); delete it and "
                              f"{how}{hint}") from None
    out = []
    for ds in (train, test):
        x = ds.data
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim == 3:  # MNIST: (N, H, W)
            x = x[:, None]
        else:  # CIFAR: (N, H, W, C)
            x = x.transpose(0, 3, 1, 2)
        y = ds.targets
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        out += [np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)]
    return out[0], out[1], out[2], out[3], list(train.classes)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (population) of uint8 images (N, C, H, W),
    in [0, 1] units, from per-channel histograms (no float copy of the set)."""
    C = x.shape[1]
    hist = np.zeros((C, 256), dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        part = x[s: s + chunk]
        for c in range(C):
            hist[c] += np.bincount(part[:, c].ravel(), minlength=256)
    v = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    var = (hist * v * v).sum(1) / n - mean ** 2
    return mean, np.sqrt(np.maximum(var, 1e-12))


def per_class(y: np.ndarray, classes: int, k: int, rng: np.random.RandomState) -> np.ndarray:
    """``k`` indices per class (0 = all), drawn with ``rng`` class by class; sorted."""
    picked = []
    for c in range(classes):
        idx = np.flatnonzero(y == c)
        if k and idx.size < k:
            raise ValueError(f"class {c} has only {idx.size} images")
        picked.append(idx[rng.permutation(idx.size)][:k] if k else idx)
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------------------
# On-device pipeline
# ---------------------------------------------------------------------------


def crop_flip(x: torch.Tensor, r: torch.Tensor, pad: int, crop: bool, flip: bool) -> torch.Tensor:
    """Batched random crop (zero padding ``pad``) and horizontal flip of uint8
    images ``x`` (B, C, H, W), from one random integer per image ``r`` in
    [0, 2·(2·pad+1)²): bit 0 flips, the rest pick the offsets.  Two gathers."""
    B, C, H, W = x.shape
    side = 2 * pad + 1 if crop else 1
    flip_bit = (r % 2).bool() if flip else None
    q = r // 2
    dx, dy = q % side, (q // side) % side
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    cols = ar_w.expand(B, W)
    if flip_bit is not None:
        cols = torch.where(flip_bit[:, None], (W - 1) - ar_w, ar_w)
    if crop and pad:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = dy[:, None] + ar_h
        x = x.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * pad))
        cols = cols + dx[:, None]
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def random_ints(n: int, pad: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The random integers ``crop_flip`` consumes: one per image."""
    return torch.randint(0, 2 * (2 * pad + 1) ** 2, (n,), generator=generator, device=device)


def normalize(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 pixels → (x/255 − mean)/std as ``dtype``; scale, shift are (1, C, 1, 1)."""
    return torch.addcmul(shift, x.to(dtype), scale)


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlf_tui.engine.images",
                                 description="Download an image data set with torchvision.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download", help="download NAME into --root")
    dl.add_argument("name", choices=sorted(SOURCES))
    dl.add_argument("--root", default="~/.cache/dlf-tui/data")
    args = ap.parse_args(argv)
    root = Path(args.root).expanduser()
    try:
        xtr, ytr, xte, yte, names = read(args.name, root, download=True)
    except DataUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{SOURCES[args.name].title}: {len(ytr)} training and {len(yte)} test images of shape "
          f"{tuple(xtr.shape[1:])}, {len(names)} classes, in {root / SOURCES[args.name].folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
