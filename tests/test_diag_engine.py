"""Diagnostics flowing through the engine: diag series, CSV columns, live toggles, events."""

from __future__ import annotations

import csv
import math

import numpy as np
from typer.testing import CliRunner

from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app

from .conftest import tiny_config

runner = CliRunner()


def test_diagnostics_series_and_csv(tmp_path):
    cfg = tiny_config("run.steps=300", "diagnostics.enabled=true", "diagnostics.every=50",
                      "diagnostics.ntk_every=100", "diagnostics.ntk_size=20")
    run = runs.create_run(cfg, tmp_path / "r")
    assert launch.spawn_run_engine(run).wait(120) == 0, launch.engine_failure(run)
    d = run.read("diag")
    cols = run.columns("diag")
    assert list(d[:, 0]) == [50, 100, 150, 200, 250, 300]
    lam = d[:, cols.index("hessian_lambda_max")]
    ntk = d[:, cols.index("ntk_lambda_max")]
    assert np.isfinite(lam).all() and (lam > 0).all()
    assert np.isfinite(ntk[1::2]).all() and np.isnan(ntk[0::2]).all()  # NTK only every 100
    out = tmp_path / "m.csv"
    assert runner.invoke(app, ["export", str(run.path), "--csv", str(out)]).exit_code == 0
    rows = list(csv.DictReader(open(out)))
    assert rows[49]["hessian_lambda_max"] != "" and rows[48]["hessian_lambda_max"] == ""
    assert math.isclose(float(rows[99]["hessian_lambda_max"]), lam[1], rel_tol=1e-15)
    assert rows[99]["ntk_lambda_max"] != "" and rows[49]["ntk_lambda_max"] == ""


def test_diagnostics_can_be_switched_on_and_retimed_live(start_run):
    live = start_run(tiny_config())
    live.wait_rows(200)
    assert live.run.rows("diag") == 0
    r = runner.invoke(app, ["ctl", str(live.path), "set", "diagnostics=true", "diagnostics_every=40"])
    assert r.exit_code == 0, r.output
    live.wait_rows(live.run.rows() + 400)
    d = live.run.read("diag")
    assert len(d) >= 5 and (d[:, 0] % 40 == 0).all()
    r = runner.invoke(app, ["ctl", str(live.path), "set", "diagnostics=false"])
    assert r.exit_code == 0
    n = live.run.rows("diag")
    live.wait_rows(live.run.rows() + 400)
    assert live.run.rows("diag") <= n + 1  # at most one computed before the edit landed
    r = runner.invoke(app, ["ctl", str(live.path), "set", "diagnostics_every=0"])
    assert r.exit_code == 2 and "diagnostics_every" in r.stderr


def test_edge_of_stability_crossing_is_an_event(tmp_path):
    # lr 1 on the Fig. 4 spiral: λ_max passes 2/η ≈ update 4,100 (see the closing note)
    cfg = tiny_config("run.steps=6000", "data.points_per_class=100", "model.hidden=[100]",
                      "schedule.amplitude=70", "schedule.period=5000", "run.dtype=float64",
                      "diagnostics.enabled=true", "diagnostics.every=25", "model.init=glorot")
    run = runs.create_run(cfg, tmp_path / "r")
    assert launch.spawn_run_engine(run).wait(300) == 0, launch.engine_failure(run)
    evs = [e for e in run.events() if e["kind"] == "edge_of_stability"]
    assert evs and "went above 2/η = 2" in evs[0]["message"]
    d = run.read("diag")
    lam = d[:, 1]
    first_above = int(d[np.argmax(lam > 2.0), 0])
    assert 3000 < first_above <= evs[0]["step"] < 6000
