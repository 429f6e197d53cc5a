"""The user's own model and data: entries in a preset, trained through ``dlf-tui run``,
resumed exactly, swept, opened in the TUI, offered by a plugin; bad entries in one line."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import sync  # noqa: E402
from test_ui_live import until  # noqa: E402

from dlf_tui.cli.main import app  # noqa: E402
from dlf_tui.core import config, entries  # noqa: E402
from dlf_tui.store import code as codestore  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.store import sweep as sweeps  # noqa: E402

runner = CliRunner()

MODEL_PY = '''
import torch
from torch import nn

calls = {"forward": 0}


class TinyCNN(nn.Module):
    def __init__(self, channels, classes, width):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.mean((2, 3)))


def cnn(input_shape, classes, width=4):
    return TinyCNN(input_shape[0], classes, width)


def mlp(input_shape, classes, width=8):
    n = 1
    for s in input_shape:
        n *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.Tanh(), nn.Linear(width, classes))
'''

DATA_PY = '''
import numpy as np
import torch


def vectors(n=60, classes=3, features=5, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % classes
    x = rng.randn(n, features) + y[:, None]
    return {"train": (x, y), "val": (x[:24], y[:24]), "class_names": ["a", "b", "c"]}


class Images(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 1, 6, 6, generator=g) + self.y[:, None, None, None].double()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def images(n=32):
    return {"train": Images(n, 0), "val": Images(16, 1)}
'''

PRESET = '''
name = "mine"
[model]
kind = "./model.py:mlp"
[model.args]
width = 8
[data]
name = "./data.py:vectors"
eval_every = 25
[optim]
name = "sgd"
lr = 0.05
momentum = 0.5
[schedule]
amplitude = 5
period = 40
[run]
steps = 300
checkpoint_every = 100
device = "cpu"
'''


def cli(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.fixture
def project(tmp_path):
    """A user's project directory: model.py, data.py and a preset beside them."""
    d = tmp_path / "project"
    d.mkdir()
    (d / "model.py").write_text(MODEL_PY)
    (d / "data.py").write_text(DATA_PY)
    (d / "mine.toml").write_text(PRESET)
    return d


def only_run(rdir: Path) -> runs.Run:
    [run] = runs.list_runs(rdir)
    return run


def test_entry_paths_are_relative_to_the_preset_or_to_here(project, monkeypatch):
    cfg = config.load(project / "mine.toml")
    assert cfg.model.kind == f"{project / 'model.py'}:mlp" and cfg.model.args == {"width": 8}
    assert cfg.data.name == f"{project / 'data.py'}:vectors"
    monkeypatch.chdir(project.parent)
    cfg = config.apply_overrides(cfg, ["model.kind=project/model.py:cnn", "model.args.width=3"])
    assert cfg.model.kind == f"{project / 'model.py'}:cnn" and cfg.model.args == {"width": 3}
    assert config.loads(config.to_toml(cfg)) == cfg  # the args table round-trips


def test_a_user_mlp_trains_keeps_its_code_and_resumes_exactly(project, tmp_path, monkeypatch):
    rdir = tmp_path / "runs"
    r = cli("run", project / "mine.toml", "--runs-dir", rdir / "ref")
    assert r.exit_code == 0, r.output
    ref = only_run(rdir / "ref")
    assert ref.state()["state"] == "finished" and ref.rows() == 300
    assert np.isfinite(ref.read("eval")).all() and ref.rows("eval") > 5
    [model, data] = sorted(codestore.saved_entries(ref.path), key=lambda e: e.role != "model")
    assert (ref.path / model.copy).read_text() == MODEL_PY
    assert model.sha256 == codestore.sha256(project / "model.py") and data.role == "data"

    # the same run, crashed by the engine's fault hook after its checkpoint at 200, resumed
    monkeypatch.setenv("DLF_TUI_FAULT_AT_STEP", "250")
    assert cli("run", project / "mine.toml", "--runs-dir", rdir / "cut").exit_code == 1
    cut = only_run(rdir / "cut")
    assert cut.state()["state"] == "crashed"
    monkeypatch.delenv("DLF_TUI_FAULT_AT_STEP")
    r = cli("resume", cut.id, "--runs-dir", rdir / "cut")
    assert r.exit_code == 0, r.output
    assert np.array_equal(cut.read(), ref.read(), equal_nan=True)  # bit for bit (float64)
    assert np.array_equal(cut.read("eval"), ref.read("eval"), equal_nan=True)


def test_resume_runs_the_saved_copy_and_asks_for_trust_when_the_file_changed(project, tmp_path,
                                                                              monkeypatch):
    rdir = tmp_path / "runs"
    monkeypatch.setenv("DLF_TUI_FAULT_AT_STEP", "150")
    assert cli("run", project / "mine.toml", "--runs-dir", rdir).exit_code == 1
    monkeypatch.delenv("DLF_TUI_FAULT_AT_STEP")
    run = only_run(rdir)
    # the file on disk now builds another model: resuming must not pick it up
    (project / "model.py").write_text(MODEL_PY.replace("nn.Tanh()", "nn.ReLU()"))
    r = cli("resume", run.id, "--runs-dir", rdir)
    assert r.exit_code == 2 and "--trust-code" in r.stderr and len(r.stderr.splitlines()) == 1
    assert run.state()["state"] == "crashed"  # nothing started
    r = cli("resume", run.id, "--runs-dir", rdir, "--trust-code")
    assert r.exit_code == 0, r.output
    notes = [e["message"] for e in run.events() if e["kind"] == "code"]
    assert notes and "changed since the run started; using the saved copy" in notes[0]
    assert "nn.Tanh()" in (run.path / "code" / "model-model.py").read_text()
    # a run directory copied to a machine without the files: the same question
    (project / "model.py").unlink()
    assert "is not on this machine" in codestore.trust_problem(run.path)


def test_a_user_cnn_on_a_dataset_with_mse_and_hessian_diagnostics(project, tmp_path):
    rdir = tmp_path / "runs"
    r = cli("run", project / "mine.toml", "--runs-dir", rdir, "--steps", "60",
            "--set", f"model.kind={project / 'model.py'}:cnn", "--set", "model.args={width=3}",
            "--set", f"data.name={project / 'data.py'}:images", "--set", "loss.kind=mse",
            "--set", "diagnostics.enabled=true", "--set", "diagnostics.every=20",
            "--set", "diagnostics.ntk_every=30", "--set", "diagnostics.ntk_size=8",
            "--set", "optim.name=gd", "--set", "optim.momentum=0.0")
    assert r.exit_code == 0, r.output
    run = only_run(rdir)
    cols = run.columns()
    assert "loss_mse" in cols and "loss_ce" not in cols and "val_loss_mse" in run.columns("eval")
    m = run.read()
    assert np.isfinite(m[:, cols.index("loss_mse")]).all()
    diag = run.read("diag")
    assert len(diag) == 4 and (diag[:, 1][np.isfinite(diag[:, 1])] > 0).all()
    dcols = run.columns("diag")
    assert np.isfinite(diag[:, dcols.index("hessian_lambda_max")]).sum() == 3  # updates 20, 40, 60
    assert np.isfinite(diag[:, dcols.index("ntk_lambda_max")]).sum() == 2  # updates 30, 60


def test_two_ranks_train_a_user_model_with_mse_as_one_process_does(project, tmp_path):
    runs_of = {}
    for n in (1, 2):
        rdir = tmp_path / f"runs{n}"
        r = cli("run", project / "mine.toml", "--runs-dir", rdir, "--steps", "120",
                "--set", "loss.kind=mse", "--nproc", n)
        assert r.exit_code == 0, r.output
        runs_of[n] = only_run(rdir)
    one, two = runs_of[1], runs_of[2]
    assert one.columns() == two.columns() and "loss_mse" in one.columns()
    np.testing.assert_allclose(two.read(), one.read(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(two.read("eval"), one.read("eval"), rtol=0, atol=1e-10)


def test_a_sweep_of_user_entries_over_two_seeds(project, tmp_path):
    rdir = tmp_path / "runs"
    r = cli("sweep", project / "mine.toml", "--seeds", "2", "--steps", "80", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [sw] = sweeps.list_sweeps(rdir)
    a, b = (m.run for m in sw.members)
    for m in (a, b):
        assert m.raw_state()["state"] == "finished" and m.rows() == 80
        assert codestore.saved_entries(m.path)
    assert not np.array_equal(a.read(), b.read())  # seeds differ: the initial weights differ


def test_a_gd_sweep_of_a_user_model_trains_its_members_in_one_vmapped_step(project, tmp_path):
    gd = ["--set", "optim.name=gd", "--set", "optim.momentum=0", "--set", "optim.lr=0.2"]
    rdir = tmp_path / "runs"
    r = cli("sweep", project / "mine.toml", "--seeds", "2", "--steps", "60", *gd, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [sw] = sweeps.list_sweeps(rdir)
    assert "mode vmap (your own model" in (sw.path / "engine.log").read_text()
    for m in sw.members:  # each member is the run it would be alone
        seed = m.run.config().run.seed
        alone = tmp_path / f"alone{seed}"
        assert cli("run", project / "mine.toml", "--steps", "60", *gd, "--set", f"run.seed={seed}",
                   "--runs-dir", alone).exit_code == 0
        np.testing.assert_allclose(m.run.read(), only_run(alone).read(), rtol=0, atol=1e-9)


def test_a_user_entry_that_raises_mid_run_ends_it_crashed_with_the_line(project, tmp_path):
    (project / "model.py").write_text(MODEL_PY + textwrap.dedent('''
        class Flaky(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner, self.n = inner, 0

            def forward(self, x):
                self.n += 1
                if self.n > 120:
                    raise FloatingPointError("the user's forward gave up")
                return self.inner(x)


        def flaky(input_shape, classes):
            return Flaky(mlp(input_shape, classes))
        '''))
    rdir = tmp_path / "runs"
    r = cli("run", project / "mine.toml", "--runs-dir", rdir, "--set", "model.kind=" + str(project / "model.py") + ":flaky",
            "--set", "model.args={}", "--set", "data.eval_every=1000")
    assert r.exit_code == 1
    run = only_run(rdir)
    st = run.state()
    assert st["state"] == "crashed" and "FloatingPointError: the user's forward gave up" in st["reason"]
    assert "\n" not in st["reason"]
    assert 50 <= run.rows() < 120  # every flushed update is kept


def test_a_plugin_offers_a_model_and_a_data_set_by_name(tmp_path, monkeypatch):
    site = tmp_path / "site"
    pkg = site / "dlfplug"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(MODEL_PY + DATA_PY)
    dist = site / "dlfplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dlfplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[dlf_tui.models]\ntinynet = dlfplug:mlp\n\n[dlf_tui.datasets]\nblobs = dlfplug:vectors\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    entries.plugins.cache_clear()
    try:
        assert entries.plugins("model") == {"tinynet": "dlfplug:mlp"}
        rdir = tmp_path / "runs"
        r = cli("run", "spiral-static", "--runs-dir", rdir, "--steps", "50", "--device", "cpu",
                "--set", "model.kind=tinynet", "--set", "data.name=blobs")
        assert r.exit_code == 0, r.output
        run = only_run(rdir)
        assert run.rows() == 50
        [saved] = [e for e in codestore.saved_entries(run.path) if e.role == "model"]
        assert saved.kind == "plugin" and saved.module == "dlfplug"
        r = cli("run", "spiral-static", "--runs-dir", rdir, "--set", "model.kind=nosuchplugin")
        assert r.exit_code == 2 and "installed plugins: tinynet" in r.stderr
        listing = cli("presets").stdout
        assert "plugins (use as model.kind / data.name):" in listing
        assert any(ln.split()[:3] == ["tinynet", "model", "dlfplug:mlp"] for ln in listing.splitlines())
        picker_starts_a_plugin_run(rdir)  # the picker offers them too
    finally:
        entries.plugins.cache_clear()


@sync
async def picker_starts_a_plugin_run(rdir: Path) -> None:
    from dlf_tui.ui.app import DlfApp
    from dlf_tui.ui.screens.picker import PickerScreen

    app = DlfApp(runs_dir=rdir)
    async with app.run_test(size=(120, 40)) as pilot:
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        assert "models: tinynet; data sets: blobs" in str(picker.query_one("#picker-plugins").render())
        picker.query_one("#f-model").value = "tinynet"
        picker.query_one("#f-data").value = "blobs"
        picker.query_one("#f-steps").value = "40"
        picker.query_one("#f-device").value = "cpu"
        picker.query_one("#f-period").focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.session is not None, timeout=60, what="engine start")
        cfg = app.session.run.config()
        assert (cfg.model.kind, cfg.data.name) == ("tinynet", "blobs")
        await until(pilot, lambda: app.session.run.rows() == 40, timeout=60, what="the run")



BAD = {
    "file not found": ("model.kind", "./nope.py:mlp", None, "nope.py: no such file"),
    "no such function": ("model.kind", "./model.py:resnet", None, "has no function 'resnet'"),
    "not callable": ("model.kind", "./bad.py:build", "build = 3\n", "is a int, not a function"),
    "import raises": ("model.kind", "./bad.py:build", "import nonexistent_pkg_xyz\n",
                      "importing"),
    "factory raises": ("model.kind", "./bad.py:build",
                       "def build(s, c):\n    raise ValueError('no such width')\n",
                       "build() raised ValueError: no such width"),
    "wrong return type": ("model.kind", "./bad.py:build", "def build(s, c):\n    return [1]\n",
                          "returned list, not a torch.nn.Module"),
    "wrong output shape": ("model.kind", "./bad.py:build",
                           "from torch import nn\ndef build(s, c):\n    return nn.Linear(s[0], c + 1)\n",
                           "needs (8, 3), one score per class"),
    "forward raises": ("model.kind", "./bad.py:build",
                       "from torch import nn\ndef build(s, c):\n    return nn.Linear(s[0] + 1, c)\n",
                       "the model's forward raised RuntimeError"),
    "module not found": ("model.kind", "no_such_module_xyz.sub:build", None,
                         "no module named 'no_such_module_xyz'"),
    "loader returns no dict": ("data.name", "./bad.py:load", "def load():\n    return (1, 2)\n",
                               "returned tuple, not a dict"),
    "x/y lengths differ": ("data.name", "./bad.py:load",
                           "import numpy as np\ndef load():\n    return {'train': (np.zeros((5, 2)), np.zeros(4, int))}\n",
                           "5 inputs but 4 labels"),
    "labels out of range": ("data.name", "./bad.py:load",
                            "import numpy as np\ndef load():\n    return {'train': (np.zeros((4, 2)), np.array([0, 1, -1, 2]))}\n",
                            "labels go down to -1"),
    "labels not integers": ("data.name", "./bad.py:load",
                            "import numpy as np\ndef load():\n    return {'train': (np.zeros((4, 2)), np.array([0., 1, 0, 1]))}\n",
                            "labels must be integers"),
    "non-floating inputs": ("data.name", "./bad.py:load",
                            "import numpy as np\ndef load():\n    return {'train': (np.zeros((4, 2), int), np.array([0, 1, 0, 1]))}\n",
                            "inputs must be floating point"),
    "empty split": ("data.name", "./bad.py:load",
                    "import numpy as np\ndef load():\n    return {'train': (np.zeros((0, 2)), np.zeros(0, int))}\n",
                    "train is empty"),
    "classes below the labels": ("data.name", "./bad.py:load",
                                 "import numpy as np\ndef load():\n    return {'train': (np.zeros((4, 2)), np.array([0, 1, 2, 3])), 'classes': 3}\n",
                                 "with 3 classes they must be 0..2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_entry_is_one_line_and_exit_2(project, tmp_path, monkeypatch, case):
    key, value, source, expected = BAD[case]
    if source is not None:
        (project / "bad.py").write_text(source)
    monkeypatch.chdir(project)  # --set paths are relative to here
    r = cli("run", project / "mine.toml", "--runs-dir", tmp_path / "runs", "--set", f"{key}={value}",
            *(["--set", "model.args={}"] if value.startswith("./bad.py") and key == "model.kind" else []))
    assert r.exit_code == 2, r.output
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: {key} = ") and expected in line, line
    assert "Traceback" not in r.output
    [run] = runs.list_runs(tmp_path / "runs")
    assert run.rows() == 0 and run.state()["state"] == "crashed"


@sync
async def test_the_dashboard_opens_a_user_model_run(project, tmp_path):
    from dlf_tui.ui.app import DlfApp

    rdir = tmp_path / "runs"
    assert cli("run", project / "mine.toml", "--runs-dir", rdir).exit_code == 0
    run = only_run(rdir)
    app = DlfApp(runs_dir=rdir, attach=run)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.session is not None and app.dashboard.history_loaded
                    and app.session.history.rows == 300, what="the run's history")
        dash = app.dashboard
        await until(pilot, lambda: all(c.has_data for c in dash.charts if c.id != "sharpness"),
                    what="charts to fill")
        assert dash.query_one("#accuracy").points > 10


def test_a_fork_of_a_user_run_runs_its_saved_code_only_when_trusted(project, tmp_path):
    rdir = tmp_path / "runs"
    assert cli("run", project / "mine.toml", "--runs-dir", rdir).exit_code == 0
    parent = only_run(rdir)
    r = cli("fork", parent.id, "--at", 150, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [child] = [x for x in runs.list_runs(rdir) if x.id != parent.id]
    assert np.array_equal(child.read(), parent.read(), equal_nan=True)
    assert codestore.saved_entries(child.path) == codestore.saved_entries(parent.path)
    (project / "data.py").write_text(DATA_PY + "\n# edited\n")
    r = cli("fork", parent.id, "--at", 150, "--runs-dir", rdir)
    assert r.exit_code == 2 and "forking runs the data code saved" in r.stderr
    assert len(runs.list_runs(rdir)) == 2  # nothing created
    assert cli("fork", parent.id, "--at", 150, "--runs-dir", rdir, "--trust-code").exit_code == 0
