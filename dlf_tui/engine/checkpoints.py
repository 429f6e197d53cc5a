"""The checkpoint file: what ``checkpoints/step-*.pt`` holds and how it is read.

A checkpoint is plain data — tensors, numbers, strings, lists and dicts — read
with ``torch.load(weights_only=True)``, so nothing in a file someone else made is
executed.  Version 2 is ``{"version", "step", "config", "parts": {name: state},
"rows": {series: rows}}``, one entry in ``parts`` per *Stateful* part (anything
with ``state_dict()`` / ``load_state_dict()``); version 1 (the trainer's parts as
top-level keys, before the Recorder) is read into the same shape.  The Recorder
writes them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping, Protocol

import torch

from dlf_tui.core import series
from dlf_tui.core.errors import SetupError
from dlf_tui.store import run as runs

CHECKPOINT_VERSION = 2  # 2: {"parts": {name: state}}; 1: the trainer's parts as top-level keys
_V1_PARTS = ("model", "optimizer", "schedule", "rng")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's contents as plain data (tensors, numbers, strings, lists and
    dicts: ``weights_only`` — nothing in the file is executed)."""
    try:
        doc = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        text = str(err).strip().splitlines()
        raise SetupError(f"{path}: not a checkpoint this engine reads "
                         f"({text[0][:160] if text else type(err).__name__})") from None
    if not isinstance(doc, dict) or doc.get("version") not in (1, CHECKPOINT_VERSION):
        version = doc.get("version") if isinstance(doc, dict) else None
        raise SetupError(f"{path}: unsupported checkpoint version {version}")
    if doc["version"] == 1:
        doc = {"version": CHECKPOINT_VERSION, "step": doc["step"], "config": doc.get("config", ""),
               "parts": {**{k: doc[k] for k in _V1_PARTS},
                         "progress": {"step": doc["step"], "lr": doc["lr"]}},
               "rows": {series.METRICS: doc["metrics_rows"], series.EVAL: doc["eval_rows"],
                        series.DIAG: doc.get("diag_rows", 0)}}
    return doc


def load_parts(doc: dict, parts: Mapping[str, Stateful], path: Path) -> None:
    """Restore every part from a checkpoint, in the order ``parts`` lists them."""
    saved = doc["parts"]
    for name, part in parts.items():
        if name not in saved:
            raise SetupError(f"{path}: the checkpoint holds no {name!r}")
        part.load_state_dict(saved[name])


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((Path(run_dir) / runs.CHECKPOINTS).glob("step-*.pt"))
    if not ckpts:
        raise SetupError(f"{Path(run_dir).name}: no checkpoint yet")
    return ckpts[-1]
