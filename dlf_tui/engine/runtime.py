"""The engine process's set-up: its config, the device, threads, float modes, stop signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import torch

from dlf_tui.core import config
from dlf_tui.core.config import Config
from dlf_tui.core.errors import ConfigError, SetupError
from dlf_tui.store import run as runs


def load_config(run_dir: Path) -> Config:
    """A run directory's resolved config; a bad one is a SetupError (one line)."""
    try:
        return config.load(Path(run_dir) / runs.CONFIG)
    except ConfigError as err:
        raise SetupError(str(err)) from None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SetupError(f"run.device = {name}: CUDA is not available on this machine (use cpu or auto)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SetupError(f"run.device = {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    return torch.device(name)


def dtype_of(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.run.dtype == "float64" else torch.float32


def prepare_process(cfg: Config, device: torch.device, ranks: int = 1) -> None:
    """Threads, float modes and the seed, before the model is built.  ``ranks``
    processes of one run on the CPU share its cores."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    elif ranks > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks))
    # Subnormal floats (e.g. exp of a very negative log-probability) are much slower
    # on x86 and change nothing measurable: flush them to zero.
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.run.seed)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT call ``stop`` (the loop then checkpoints and ends); a hang-up
    of the terminal that started the engine is ignored."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


class TorchRNG:
    """torch's global generators as a checkpoint part (CUDA's too on a CUDA device)."""

    def __init__(self, device: torch.device):
        self.device = device

    def state_dict(self) -> dict:
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda"])
