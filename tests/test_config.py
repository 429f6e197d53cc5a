"""Config and CLI refusals: one line naming the file or flag and the key, exit 2, no traceback."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from dlf_tui.core import config
from dlf_tui.core.errors import ConfigError
from dlf_tui.cli.main import app

runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_refused(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: ")
    for n in needles:
        assert n in text, (n, text)
    return text


BASE = """
name = "t"
[schedule]
amplitude = 70.0
period = 5000
[optim]
lr = 1.0
[run]
steps = 100
"""


@pytest.mark.parametrize("body,needles", [
    ("[schedule]\namplitude = 0.5\n", ["schedule.amplitude", ">= 1"]),
    ("[schedule]\nperiod = 0\n", ["schedule.period", ">= 1"]),
    ("[optim]\nlr = 0.0\n", ["optim.lr", "> 0"]),
    ("[optim]\nlr = -1\n", ["optim.lr"]),
    ("[run]\nsteps = 0\n", ["run.steps", ">= 1"]),
    ("[run]\ndtype = \"float16\"\n", ["run.dtype", "float32, float64"]),
    ("[run]\ndevice = \"tpu\"\n", ["run.device"]),
    ("[schedule]\nkind = \"saw\"\n", ["schedule.kind", "triangle"]),
    ("[schedule]\namplitud = 3\n", ["unknown key schedule.amplitud"]),
    ("[schedul]\namplitude = 3\n", ["unknown key 'schedul'"]),
    ("[schedule]\nperiod = \"long\"\n", ["schedule.period", "must be an integer"]),
    ("[schedule]\nperiod = 10.5\n", ["schedule.period", "must be an integer"]),
    ("[schedule]\nlast_period_static = 1\n", ["schedule.last_period_static", "true or false"]),
    ("[model]\nhidden = [0]\n", ["model.hidden"]),
    ("[schedule]\namplitude = nan\n", ["schedule.amplitude", "finite"]),
    ("[run]\nsteps = [1]\n", ["run.steps"]),
    ("schedule = 3\n", ["[schedule] must be a table"]),
    ("this is not toml\n", ["invalid TOML"]),
])
def test_bad_preset_files_are_refused(tmp_path, body, needles):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    text = assert_refused(run_cli("presets", "show", str(path)), str(path), *needles)
    assert re.match(r"error: \S*bad\.toml: ", text)


@pytest.mark.parametrize("flag,needles", [
    ("schedule.amplitude=0.9", ["--set schedule.amplitude=0.9", "schedule.amplitude", ">= 1"]),
    ("schedule.period=-3", ["--set schedule.period=-3", ">= 1"]),
    ("optim.lr=0", ["--set optim.lr=0", "optim.lr", "> 0"]),
    ("run.steps=0", ["run.steps"]),
    ("run.steps=abc", ["run.steps", "must be an integer"]),
    ("run.dtype=float16", ["run.dtype"]),
    ("run.sed=1", ["unknown key run.sed"]),
    ("amplitude=3", ["expected section.key"]),
    ("schedule.amplitude", ["expected KEY=VALUE"]),
    ("optim.momentum=0.9", ["optim.momentum"]),  # gd has no momentum
])
def test_bad_set_overrides_are_refused(flag, needles):
    assert_refused(run_cli("presets", "show", "spiral-fig4", "--set", flag), *needles)


def test_run_refuses_before_creating_anything(tmp_path):
    assert_refused(run_cli("run", "spiral-fig4", "--runs-dir", str(tmp_path / "r"),
                           "--set", "schedule.amplitude=0"), "schedule.amplitude")
    assert_refused(run_cli("run", "spiral-fig4", "--runs-dir", str(tmp_path / "r"), "--steps", "0"),
                   "run.steps")
    assert_refused(run_cli("run", "no-such-preset", "--runs-dir", str(tmp_path / "r")),
                   "unknown preset 'no-such-preset'", "spiral-fig4")
    assert not (tmp_path / "r").exists()


def test_unusable_runs_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("run", "spiral-fig4", "--runs-dir", str(blocker / "runs"))
    assert_refused(result, "cannot create runs directory", str(blocker / "runs"))


def test_presets_list_and_show_round_trip():
    result = run_cli("presets")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any(l.startswith("spiral-fig4 ") and "Fig. 4" in l for l in lines)
    assert any(l.startswith("spiral-static ") for l in lines)
    shown = run_cli("presets", "show", "spiral-fig4", "--set", "schedule.amplitude=30")
    assert shown.exit_code == 0
    cfg = config.loads(shown.stdout)
    assert cfg.schedule.amplitude == 30.0 and cfg.schedule.period == 5000
    assert cfg.run.steps == 70000 and cfg.run.dtype == "float64" and cfg.optim.lr == 1.0
    assert cfg.name == "spiral-fig4"


def test_user_presets_shadow_and_extend(tmp_path, monkeypatch):
    user = tmp_path / "cfg"
    (user / "dlf-tui" / "presets").mkdir(parents=True)
    (user / "dlf-tui" / "presets" / "mine.toml").write_text(
        'description = "my run"\n' + BASE)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user))
    out = run_cli("presets").stdout
    assert "mine" in out and "user" in out and "my run" in out
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "spiral-fig4.toml").write_text('description = "shadowed"\n' + BASE)
    out = run_cli("presets", "--presets-dir", str(extra)).stdout
    assert "shadowed" in out


def test_config_toml_round_trip():
    cfg = config.apply_overrides(config.Config(name="x"), ["model.hidden=[8,4]", "run.seed=3",
                                                          "schedule.kind=sine"])
    assert config.loads(config.to_toml(cfg)) == cfg
    assert cfg.model.hidden == (8, 4)


def test_live_checks_share_the_config_rules():
    assert config.check_live("amplitude", 30) == 30.0
    assert config.check_live("period", 2000) == 2000
    for name, bad in [("amplitude", 0.5), ("period", 0), ("lr", 0), ("lr", float("inf")),
                      ("period", 1.5), ("amplitude", "x"), ("nope", 1)]:
        with pytest.raises(ConfigError):
            config.check_live(name, bad)
