"""Forks of a run at an update, resume --steps/--set, and a set pace: real engines."""

from __future__ import annotations

import time

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.wire import client

from .conftest import tiny_config

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def col(run: runs.Run, name: str) -> np.ndarray:
    return run.read()[:, run.columns().index(name)]


@pytest.fixture
def parent(tmp_path):
    """A finished 3000-update float64 run with checkpoints every 1000 updates and two live
    edits between its checkpoints (A at update 1201, lr at update 2401)."""
    rdir = tmp_path / "runs"
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config("run.steps=3000", "run.checkpoint_every=1000",
                                                 "data.val_seed=3", "data.eval_every=37",
                                                 "run.pace=4000")))
    run = runs.create_run(config.load(preset), rdir)
    proc = launch.spawn_run_engine(run)
    launch.wait_until_listening(run, proc)
    for at, values in ((1200, {"amplitude": 25.0}), (2400, {"lr": 0.5})):
        while run.rows() < at - 300:  # the paced run gives the edits time to land mid-run
            time.sleep(0.01)
        client.request(run.path, "set", values)
    assert proc.wait(120) == 0, launch.engine_failure(run)
    sets = [e for e in run.events() if e["kind"] == "set"]
    assert len(sets) == 2 and 1000 < sets[0]["step"] < 2000 < sets[1]["step"] < 3000
    return run


def only_child(rdir, parent: runs.Run) -> runs.Run:
    [child] = [r for r in runs.list_runs(rdir) if r.id != parent.id]
    return child


@pytest.mark.parametrize("at", [0, 1000, 1500, 2700])  # no checkpoint, at one, between (×2)
def test_a_fork_without_changes_is_the_parent_bit_for_bit(parent, at):
    r = cli("fork", parent.id, "--at", at, "--runs-dir", parent.path.parent, "--set", "run.pace=0")
    assert r.exit_code == 0, r.output
    child = only_child(parent.path.parent, parent)
    # the parent's own later edits are not the fork's: equal up to the first of them
    upto = min([e["step"] - 1 for e in parent.events() if e["kind"] == "set" and e["step"] > at]
               + [3000])
    assert np.array_equal(child.read()[:upto], parent.read()[:upto], equal_nan=True)
    assert upto == 3000 or not np.array_equal(child.read(), parent.read())
    ev, pev = child.read("eval"), parent.read("eval")
    assert np.array_equal(ev[ev[:, 0] <= upto], pev[pev[:, 0] <= upto], equal_nan=True)
    cfg = child.config()
    assert cfg.fork == config.ForkConfig(parent=str(parent.path.resolve()), at=at)
    [fork_ev] = [e for e in child.events() if e["kind"] == "fork"]
    assert fork_ev["step"] == at and fork_ev["parent_id"] == parent.id
    assert not [e for e in child.events() if e["kind"] == "note"]  # the replay matched


def test_a_fork_with_other_settings_changes_from_the_next_update(parent):
    rdir = parent.path.parent
    r = cli("fork", parent.id, "--at", 1700, "--set", "schedule.amplitude=1", "--set",
            "optim.lr=0.25", "--steps", 3500, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    child = only_child(rdir, parent)
    m, p = child.read(), parent.read()
    assert len(m) == 3500
    assert np.array_equal(m[:1700], p[:1700])  # the parent's updates 1…1700
    amp, lr = col(child, "amplitude"), col(child, "lr")
    assert amp[1699] == 25.0 and (amp[1700:] == 1.0).all()  # update 1701 is the fork's first
    assert lr[1699] == 1.0 and (lr[1700:] == 0.25).all()
    assert not np.array_equal(m[1700:3000], p[1700:3000])
    cfg = child.config()
    assert cfg.schedule.amplitude == 1.0 and cfg.optim.lr == 0.25 and cfg.run.steps == 3500
    [line] = [ln for ln in cli("runs", "--runs-dir", rdir).stdout.splitlines()
              if ln.startswith(child.id)]
    assert f"fork of {parent.id}@1700" in line


def test_fork_refusals_are_one_line(parent):
    rdir = parent.path.parent
    for args, text in [
        (["--at", "5000"], "has 3000 updates on disk"),
        (["--at", "-4"], "needs an update number"),
        (["--at", "soon"], "needs an update number, latest or now"),
        (["--set", "model.hidden=[4]"], "a fork keeps the run's model"),
        (["--set", "schedule.amplitude=0.5"], "amplitude"),
        (["--at", "latest"], "needs more updates"),
        (["--at", "now"], "run is finished"),  # no engine is listening
    ]:
        r = cli("fork", parent.id, *args, "--runs-dir", rdir)
        assert r.exit_code == 2, (args, r.output)
        [line] = r.stderr.splitlines()
        assert line.startswith("error: ") and text in line, (args, line)
    assert [r.id for r in runs.list_runs(rdir)] == [parent.id]  # nothing created


def test_a_finished_run_is_extended_by_resume_steps_and_changed_by_resume_set(parent):
    rdir = parent.path.parent
    r = cli("resume", parent.id, "--runs-dir", rdir)
    assert r.exit_code == 2 and "--steps N" in r.stderr
    r = cli("resume", parent.id, "--steps", 3400, "--set", "schedule.period=80", "--set",
            "run.pace=0", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    assert parent.rows() == 3400 and parent.state()["state"] == "finished"
    per = col(parent, "period")
    assert per[2999] == 50 and (per[3000:] == 80).all()
    assert parent.config().run.steps == 3400
    r = cli("resume", parent.id, "--steps", 3000, "--runs-dir", rdir)
    assert r.exit_code == 2 and "already has 3400 updates" in r.stderr


def test_fork_at_now_snapshots_a_live_engine(tmp_path):
    rdir = tmp_path / "runs"
    run = runs.create_run(tiny_config("run.steps=1000000", "run.pace=2000"), rdir)
    proc = launch.spawn_run_engine(run)
    try:
        launch.wait_until_listening(run, proc)
        while run.rows() < 500:
            time.sleep(0.01)
        r = cli("fork", run.id, "--at", "now", "--steps", 3000, "--set", "run.pace=0",
                "--runs-dir", rdir)
        assert r.exit_code == 0, r.output
        child = only_child(rdir, run)
        at = child.config().fork.at
        assert at >= 500 and child.rows() == 3000
        assert np.array_equal(child.read()[:at], run.read()[:at])
    finally:
        proc.kill()
        proc.wait(10)


def test_a_set_pace_holds_and_keeps_the_trajectory(tmp_path):
    """At 1000 and 100 updates/s for 5 s each, the rate holds within 10 % and the
    updates are those of the run at full speed (pace only waits)."""
    for pace, steps in ((1000, 5000), (100, 500)):
        full = runs.create_run(tiny_config(f"run.steps={steps}"), tmp_path / f"full{steps}")
        assert launch.spawn_run_engine(full).wait(60) == 0
        run = runs.create_run(tiny_config(f"run.steps={steps}", f"run.pace={pace}"), tmp_path / f"p{pace}")
        proc = launch.spawn_run_engine(run)
        launch.wait_until_listening(run, proc)
        while run.rows() < steps // 6:
            time.sleep(0.005)
        n0, t0 = run.rows(), time.monotonic()
        while run.rows() < steps * 5 // 6:
            time.sleep(0.005)
        rate = (run.rows() - n0) / (time.monotonic() - t0)
        assert proc.wait(60) == 0
        print(f"pace {pace}: {rate:.0f} updates/s")
        assert abs(rate - pace) < 0.1 * pace, rate
        assert np.array_equal(run.read(), full.read()[:steps], equal_nan=True)


def test_forks_of_an_image_run_and_a_sweep_member(tmp_path):
    """Mini-batch SGD with momentum on CIFAR-shaped files (the batch order and augmentation
    generators come from the checkpoint), and a member of a real sweep."""
    from .test_images import image_config, write_cifar

    write_cifar(tmp_path / "data")
    rdir = tmp_path / "runs"
    img = runs.create_run(image_config(tmp_path / "data", "run.steps=60", "run.checkpoint_every=20",
                                       "run.dtype=float64", "model.kind=mlp", "model.hidden=[8]"),
                          rdir)
    assert launch.spawn_run_engine(img).wait(120) == 0, launch.engine_failure(img)
    r = cli("fork", img.id, "--at", 30, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    child = only_child(rdir, img)
    assert np.array_equal(child.read(), img.read(), equal_nan=True)

    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config("run.checkpoint_every=100", name="tiny")))
    srdir = tmp_path / "sweeps"
    assert cli("sweep", preset, "--seeds", 2, "--steps", 300, "--runs-dir", srdir).exit_code == 0
    from dlf_tui.store import sweep as sweeps

    [sw] = sweeps.list_sweeps(srdir)
    member = sw.members[1].run
    r = cli("fork", member.path, "--at", 150, "--set", "schedule.amplitude=1", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    fork_of_member = [x for x in runs.list_runs(rdir) if x.config().fork.parent == str(member.path.resolve())]
    assert len(fork_of_member) == 1
    m = fork_of_member[0].read()
    assert np.array_equal(m[:150], member.read()[:150]) and (col(fork_of_member[0], "amplitude")[150:] == 1).all()
