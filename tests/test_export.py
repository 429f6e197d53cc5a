"""export --csv / --png on a finished tiny run."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app

from .conftest import tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    run = runs.create_run(tiny_config("run.steps=400", "data.val_seed=1", "data.eval_every=100"), d)
    assert launch.spawn_run_engine(run).wait(60) == 0
    return run


def test_png_figure(finished_run, tmp_path):
    out = tmp_path / "fig.png"
    r = runner.invoke(app, ["export", str(finished_run.path), "--png", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote 4 panels" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    r = runner.invoke(app, ["export", str(finished_run.path), "--png", str(out), "--window", "100:300"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(finished_run.path), "--png", str(out), "--window", "900:999"])
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: --window 900:999")


def test_png_without_matplotlib_is_one_line(finished_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    r = runner.invoke(app, ["export", str(finished_run.path), "--png", str(tmp_path / "f.png")])
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --png needs matplotlib: pip install 'dlf-tui[plot]'"


def test_export_needs_a_target_and_a_run(finished_run, tmp_path):
    r = runner.invoke(app, ["export", str(finished_run.path)])
    assert r.exit_code == 2 and "nothing to export" in r.stderr
    r = runner.invoke(app, ["export", "no-such-run", "--csv", str(tmp_path / "x.csv"),
                            "--runs-dir", str(tmp_path)])
    assert r.exit_code == 2 and "no run 'no-such-run'" in r.stderr
