"""Helpers and fixtures for the UI tests (no tests here).

``fake_run`` writes a deterministic finished run directory (metrics, eval,
events, state) through the real ``runs.SeriesWriter``, so snapshots never
depend on a clock or on training.  ``live_run`` starts a tiny real engine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs

TINY = ["run.steps=20000000", "model.hidden=[16]", "data.points_per_class=30",
        "schedule.period=200", "run.dtype=float32", "run.device=cpu"]


def tiny_config(*extra: str, name: str = "t") -> config.Config:
    return config.apply_overrides(config.Config(name=name), [*TINY, *extra])


def _gamma(steps: np.ndarray, amplitude: float, period: int, classes: int) -> np.ndarray:
    k = steps - 1
    t = k % (period + 1)
    c = ((k // (period + 1)) % classes).astype(np.int64)
    s = 2.0 * (amplitude - 1.0) / period
    w = np.where(t < period / 2, 1.0 + t * s, 2.0 * amplitude - 1.0 - t * s)
    g = np.repeat((classes / (w + classes - 1.0))[:, None], classes, axis=1)
    g[np.arange(len(k)), c] = classes * w / (w + classes - 1.0)
    return g


def fake_run(runs_dir: Path, steps: int = 6000, period: int = 500, amplitude: float = 20.0,
             classes: int = 3, state: str = "finished", name: str = "fake",
             run_id: str = "20250101-000000-fake", edit_at: int = 3000,
             diag: bool = False, ntk_scale: float = 3.0, ntk_falling: bool = False,
             extra: tuple[str, ...] = ()) -> runs.Run:
    """A finished run with smooth, fixed curves, one amplitude edit and evals
    (``extra``: more config overrides, e.g. the optimiser; ``diag``: Hessian λ_max
    and NTK λ_max = ``ntk_scale`` × it, or × its mirror image with ``ntk_falling``)."""
    cfg = config.apply_overrides(config.Config(name=name, description="fake metrics for tests"), [
        f"schedule.period={period}", f"schedule.amplitude={amplitude}", f"run.steps={steps}",
        f"data.classes={classes}", "data.val_seed=1", "data.eval_every=100", "run.device=cpu", *extra])
    path = Path(runs_dir) / run_id
    path.mkdir(parents=True, mode=0o700)
    (path / runs.CONFIG).write_text(config.to_toml(cfg), encoding="utf-8")
    cols = (["step", "loss_dynamical", "loss_ce", "accuracy"]
            + [f"accuracy_class_{i}" for i in range(classes)]
            + [f"gamma_{i}" for i in range(classes)] + ["amplitude", "period", "lr", "grad_norm"])
    st = np.arange(1, steps + 1, dtype=np.float64)
    amp = np.where(st < edit_at, amplitude, amplitude / 2)
    g = np.where((st < edit_at)[:, None], _gamma(st, amplitude, period, classes),
                 _gamma(st, amplitude / 2, period, classes))
    ce = 1.1 * np.exp(-st / 1500.0) + 0.01
    f = ce * (1.0 + 0.3 * np.sin(2 * np.pi * st / (period + 1)) ** 2)
    acc_c = np.stack([1 - 0.6 * np.exp(-st / (800.0 * (i + 1))) for i in range(classes)], 1)
    rows = np.column_stack([st, f, ce, acc_c.mean(1), acc_c, g, amp, np.full_like(st, period),
                            np.ones_like(st), 0.1 * np.exp(-st / 2000.0)])
    w = runs.SeriesWriter(path, "metrics", cols)
    for a in range(0, steps, 997):
        w.append(rows[a:a + 997])
    w.close()
    ecols = ["step", "val_loss_ce", "val_accuracy"] + [f"val_accuracy_class_{i}" for i in range(classes)]
    es = np.concatenate([[1.0], np.arange(100, steps + 1, 100, dtype=np.float64)])
    eacc = np.stack([0.95 - 0.6 * np.exp(-es / (900.0 * (i + 1))) for i in range(classes)], 1)
    erows = np.column_stack([es, 1.2 * np.exp(-es / 1500.0) + 0.02, eacc.mean(1), eacc])
    ew = runs.SeriesWriter(path, "eval", ecols)
    ew.append(erows)
    ew.close()
    if diag:  # Hessian / NTK λ_max every 250 updates, rising towards 2/lr = 2
        ds = np.arange(250, steps + 1, 250, dtype=np.float64)
        lam = 2.0 * (1 - np.exp(-ds / 2000.0))
        dw = runs.SeriesWriter(path, "diag", ["step", "hessian_lambda_max", "ntk_lambda_max", "lr",
                                              "hessian_iters", "seconds"])
        ntk = ntk_scale * ((lam.max() + lam.min() - lam) if ntk_falling else lam)
        dw.append(np.column_stack([ds, lam, ntk, np.ones_like(ds), np.full_like(ds, 20),
                                   np.full_like(ds, 0.01)]))
        dw.close()
    events = [
        {"step": 1, "time": 0, "kind": "start", "message": f"started {name} on cpu, update 1 of {steps}"},
        {"step": edit_at, "time": 0, "kind": "set", "message": f"amplitude {amplitude:g} → {amplitude / 2:g}",
         "changes": {"amplitude": amplitude / 2}, "phase": (edit_at - 1) % (period + 1),
         "emphasized": ((edit_at - 1) // (period + 1)) % classes, "source": "client"},
        {"step": steps, "time": 0, "kind": "checkpoint",
         "message": f"checkpoint at update {steps} (finished): step-{steps:09d}.pt"},
        {"step": steps, "time": 0, "kind": "finish", "message": f"finished {steps} updates"},
    ]
    (path / runs.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    runs.write_json_atomic(path / runs.STATE, {
        "state": state, "pid": 0, "step": steps, "total": steps, "started": 0.0, "ended": 1.0,
        "reason": "", "rate": 0.0, "device": "cpu"})
    return runs.Run(path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """User config, presets and runs all under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DLF_TUI_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    (tmp_path / "runs").mkdir()
    return tmp_path


def stop_engine(proc, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except Exception:  # noqa: BLE001
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def live_run(isolated):
    """A tiny real run with its engine listening; the engine is always stopped."""
    started = []

    def start(*extra: str):
        run = runs.create_run(tiny_config(*extra), isolated / "runs")
        proc = launch.spawn_run_engine(run)
        started.append(proc)
        launch.wait_until_listening(run, proc)
        return run, proc

    yield start
    for proc in started:
        stop_engine(proc)


def wait_for(pred, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def sync(fn):
    """Run an ``async def`` test with asyncio.run (no async pytest plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper
