"""Shared fixtures: isolated config/runs dirs, the reference data, tiny real runs."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs

# the authors' reference numbers, copied from shared/reference (see tests/data/README.md)
REFERENCE = Path(__file__).resolve().parent / "data" / "spiral_fig4_reference.json"


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """Never read the user's presets or write into ./runs."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("DLF_TUI_RUNS_DIR", str(home / "runs"))


@pytest.fixture(autouse=True)
def _ieee_floats_after():
    """An engine run in this process flushes subnormal floats to zero (a global CPU mode,
    ``engine/runtime.prepare_process``); put IEEE behaviour back for the tests that
    follow (hypothesis checks it)."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))  # in the repository: never skipped


def tiny_config(*overrides: str, name: str = "tiny") -> config.Config:
    """A small, fast, real run: 30 points per class, width 16, period 50."""
    base = ["run.steps=1000000", "model.hidden=[16]", "data.points_per_class=30",
            "schedule.period=50", "schedule.amplitude=10", "run.device=cpu",
            "run.flush_seconds=0.05"]
    return config.apply_overrides(config.Config(name=name), [*base, *overrides])


class LiveRun:
    def __init__(self, run: runs.Run, proc):
        self.run, self.proc = run, proc

    @property
    def path(self) -> Path:
        return self.run.path

    def wait_rows(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.run.rows() < n:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited: {launch.engine_failure(self.run)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.run.rows()} rows after {timeout} s")
            time.sleep(0.02)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_run(tmp_path):
    """start_run(cfg) -> LiveRun: a real engine process on a fresh run directory."""
    started: list[LiveRun] = []

    def start(cfg: config.Config, runs_dir: Path | None = None) -> LiveRun:
        run = runs.create_run(cfg, runs_dir or tmp_path / "runs")
        proc = launch.spawn_run_engine(run)
        launch.wait_until_listening(run, proc)
        live = LiveRun(run, proc)
        started.append(live)
        return live

    yield start
    for live in started:
        live.kill()
