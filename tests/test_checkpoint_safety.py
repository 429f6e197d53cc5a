"""Checkpoints are data, never code: they are read with ``weights_only=True``.

A checkpoint whose pickle would run code is refused in one line naming the
file, by resume, fork and rollback, and the code never runs; a checkpoint written
by the code before the current format (version 1, ``tests/data/v1_run``, made by
commit d6aac75) still resumes to the same numbers."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core import states
from dlf_tui.engine.loops.single import SingleRun
from dlf_tui.store import launch
from dlf_tui.store import run as runs

from .conftest import tiny_config

V1_RUN = Path(__file__).resolve().parent / "data" / "v1_run"


class _Trap:
    """Unpickling this creates the marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    """Overwrite a checkpoint with one that looks right but carries the trap."""
    good = torch.load(path, weights_only=True)
    good["parts"]["schedule"] = {"trap": _Trap(marker)}
    torch.save(good, path)


def test_a_crafted_checkpoint_is_refused_by_resume_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    run = runs.create_run(tiny_config("run.steps=300", "run.checkpoint_every=100"), tmp_path / "runs")
    e = SingleRun(run.path, serve=False)
    assert e.run() == 0
    e.close()
    for ckpt in (run.path / runs.CHECKPOINTS).glob("step-*.pt"):
        plant(ckpt, marker)
    raw = json.loads(run.file(runs.STATE).read_text())
    runs.write_json_atomic(run.file(runs.STATE), {**raw, "state": states.STOPPED})
    r = CliRunner().invoke(app, ["resume", str(run.path)])
    assert r.exit_code != 0
    assert "step-000000300.pt: not a checkpoint this engine reads" in r.output
    assert not marker.exists()
    # the same from the engine directly: one line on stderr, exit 2
    p = subprocess.run([sys.executable, "-m", "dlf_tui.engine", str(run.path), "--resume"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "not a checkpoint this engine reads" in p.stderr
    assert not marker.exists()
    # a fork from it: the child's engine refuses the copied checkpoint in one line
    r = CliRunner().invoke(app, ["fork", str(run.path), "--at", "250",
                                 "--runs-dir", str(tmp_path / "forks")])
    assert r.exit_code == 2, r.output
    assert "step-000000200.pt: not a checkpoint this engine reads" in r.stderr
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_by_rollback_and_the_run_goes_on(tmp_path):
    marker = tmp_path / "pwned"
    run = runs.create_run(tiny_config("run.steps=100000000", "run.checkpoint_every=500"),
                          tmp_path / "runs")
    proc = launch.spawn_run_engine(run)
    try:
        launch.wait_until_listening(run, proc)
        deadline = time.monotonic() + 60
        while not list((run.path / runs.CHECKPOINTS).glob("step-*.pt")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = CliRunner().invoke(app, ["ctl", str(run.path), "pause"])
        assert r.exit_code == 0, r.output
        latest = sorted((run.path / runs.CHECKPOINTS).glob("step-*.pt"))[-1]
        plant(latest, marker)
        r = CliRunner().invoke(app, ["ctl", str(run.path), "rollback"])
        assert r.exit_code != 0
        assert f"{latest.name}: not a checkpoint this engine reads" in r.output
        assert not marker.exists()
        assert run.state()["state"] == states.PAUSED  # alive, still paused, nothing lost
        refused = [e for e in run.events() if e["kind"] == "refused"]
        assert refused and latest.name in refused[-1]["message"]
    finally:
        CliRunner().invoke(app, ["ctl", str(run.path), "stop"])
        proc.wait(60)
    assert not marker.exists()


def test_a_checkpoint_of_the_previous_format_resumes_to_the_same_numbers(tmp_path):
    """tests/data/v1_run: a 400-update run made by the code before the Recorder
    (checkpoint version 1, at update 200).  Resumed from it here, updates 201…400
    equal the ones that code computed in one go (float64, CPU)."""
    run_dir = tmp_path / "v1_run"
    shutil.copytree(V1_RUN, run_dir)
    before = runs.Run(run_dir).read("metrics")
    assert before.shape[0] == 400
    v1 = torch.load(run_dir / runs.CHECKPOINTS / "step-000000200.pt", weights_only=True)
    assert v1["version"] == 1 and "parts" not in v1
    e = SingleRun(run_dir, resume=True, serve=False)
    assert e.trainer.step == 200 and e.recorder.metrics.rows == 200
    assert e.run() == 0
    e.close()
    after = runs.Run(run_dir).read("metrics")
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, rtol=1e-10, atol=1e-12)
