"""A data set from the user's own loader: ``data.name = "./data.py:load"``.

The loader is called as ``load(**[data.args])`` and returns a dict::

    {"train": (x, y), "val": (x, y),          # "val" optional
     "classes": 10, "class_names": [...]}     # both optional

each split an ``(x, y)`` pair of tensors or arrays, or a ``torch.utils.data.Dataset``
of ``(x, y)`` items.  x is floating point, one row per sample (any shape per
sample); y holds integer labels 0…C−1, C = ``classes`` or the largest label + 1.
Whatever is wrong is one line naming the entry and the split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlf_tui.core.config import DataConfig
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.user_code import UserCode, UserCodeError, raised

ROLE = "data"
KEYS = ("train", "val", "classes", "class_names")


def load(cfg: DataConfig, code: UserCode, device: torch.device, dtype: torch.dtype) -> Dataset:
    fn = code.function(ROLE, cfg.name)
    out = code.call(ROLE, cfg.name, fn, **cfg.args)
    where = code.where(ROLE, cfg.name)
    name = getattr(fn, "__name__", "the loader")

    def bad(msg: str) -> UserCodeError:
        return UserCodeError(f"{where}: {msg}")

    if not isinstance(out, dict):
        raise bad(f"{name}() returned {type(out).__name__}, not a dict with \"train\" "
                  f"(and optionally \"val\", \"classes\", \"class_names\")")
    unknown = [k for k in out if k not in KEYS]
    if unknown:
        raise bad(f"{name}() returned unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if "train" not in out:
        raise bad(f"{name}() returned no \"train\" split")
    train = _split(out["train"], "train", bad)
    val = _split(out["val"], "val", bad) if out.get("val") is not None else None
    if val is not None and val[0].shape[1:] != train[0].shape[1:]:
        raise bad(f"val inputs have shape {tuple(val[0].shape[1:])} per sample, train "
                  f"{tuple(train[0].shape[1:])}")
    seen = max(int(t[1].max()) for t in (train, val) if t is not None) + 1
    classes = out.get("classes", seen)
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 2:
        raise bad(f"classes = {classes!r}: needs an integer >= 2")
    classes = int(classes)
    for split, (x, y) in (("train", train), ("val", val)):
        if y is not None and int(y.max()) >= classes:
            raise bad(f"{split} labels go up to {int(y.max())}: with {classes} classes they "
                      f"must be 0..{classes - 1}")
    names = out.get("class_names")
    if names is not None:
        if (not isinstance(names, (list, tuple)) or len(names) != classes
                or not all(isinstance(n, str) for n in names)):
            raise bad(f"class_names: needs a list of {classes} strings")
    if cfg.batch_size > train[1].shape[0]:
        raise bad(f"data.batch_size = {cfg.batch_size}: larger than the training set "
                  f"({train[1].shape[0]} samples)")

    def on_device(xy: tuple[torch.Tensor, torch.Tensor]) -> Split:
        return Split(xy[0].to(device=device, dtype=dtype), xy[1].to(device=device))

    shape = tuple(int(v) for v in train[0].shape[1:])
    in_features: int | tuple[int, ...] = shape[0] if len(shape) == 1 else shape
    return Dataset(on_device(train), on_device(val) if val is not None else None, classes,
                   in_features, names=tuple(names) if names else ())


def _split(value: Any, split: str, bad) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one split as CPU tensors, checked."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise bad(f"{split}: needs an (x, y) pair, got {len(value)} items")
        x, y = value
    elif hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        x, y = _from_dataset(value, split, bad)
    else:
        raise bad(f"{split}: needs an (x, y) pair or a torch Dataset of (x, y), "
                  f"got {type(value).__name__}")
    x, y = _tensor(x, f"{split} x", bad), _tensor(y, f"{split} y", bad)
    if x.dim() < 2:
        raise bad(f"{split} x has shape {tuple(x.shape)}: needs one row per sample (N, ...)")
    if not x.is_floating_point():
        raise bad(f"{split} x is {str(x.dtype).removeprefix('torch.')}: inputs must be "
                  f"floating point")
    y = y.reshape(-1) if y.dim() == 2 and y.shape[1] == 1 else y
    if y.dim() != 1:
        raise bad(f"{split} y has shape {tuple(y.shape)}: needs one label per sample (N,)")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise bad(f"{split} y is {str(y.dtype).removeprefix('torch.')}: labels must be integers")
    if x.shape[0] != y.shape[0]:
        raise bad(f"{split}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise bad(f"{split} is empty")
    if not bool(torch.isfinite(x).all()):
        raise bad(f"{split} x holds NaN or inf")
    lo = int(y.min())
    if lo < 0:
        raise bad(f"{split} labels go down to {lo}: labels must be 0..C-1")
    return x, y.to(torch.int64)


def _tensor(v: Any, what: str, bad) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError, RuntimeError) as err:
        raise bad(f"{what}: not an array ({raised(err)})") from None


def _from_dataset(ds: Any, split: str, bad) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a map-style Dataset's (x, y) items (the whole split stays on the device)."""
    try:
        n = len(ds)
        items = [ds[i] for i in range(n)]
    except Exception as err:  # noqa: BLE001 - the user's Dataset raised
        raise bad(f"{split}: reading the Dataset raised {raised(err)}") from None
    if not items:
        raise bad(f"{split} is empty")
    if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
        raise bad(f"{split}: Dataset items must be (x, y) pairs")
    try:
        x = torch.stack([_tensor(it[0], f"{split} x", bad) for it in items])
        y = torch.stack([_tensor(it[1], f"{split} y", bad).reshape(()) for it in items])
    except RuntimeError as err:
        raise bad(f"{split}: Dataset items differ in shape ({raised(err)})") from None
    return x, y
