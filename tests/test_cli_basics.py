"""The command line itself: --version, the runs directory (per-user default,
DLF_TUI_RUNS_DIR, --runs-dir before or after the command, and its help line),
`runs` saying where it looked, `presets` wrapped to the terminal, --offline,
and shell completion of run ids and preset names.  No engine, no torch."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run  # noqa: E402

from dlf_tui.cli import common, completion  # noqa: E402
from dlf_tui.cli.listing import preset_lines  # noqa: E402
from dlf_tui.cli.main import app  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args, env=None, **kw):
    # stderr apart from stdout (click < 8.2 mixes them unless told)
    apart = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**apart).invoke(app, [str(a) for a in args], env=env, **kw)


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"dlf-tui {common.version()}"
    assert common.version()[0].isdigit()


def test_runs_dir_help_names_the_variable_and_the_default():
    for cmd in (["runs"], ["attach"], ["run"], []):
        r = invoke(*cmd, "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert r.exit_code == 0
        line = " ".join(r.stdout.split())
        assert "Where runs live." in line and "Where runs live ." not in line
        assert "[env var: DLF_TUI_RUNS_DIR]" in line
        assert f"[default: ({common.RUNS_DIR_DEFAULT})]" in line or f"[default: {common.RUNS_DIR_DEFAULT}]" in line


def test_default_runs_dir_is_per_user_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DLF_TUI_RUNS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform.startswith("linux"):
        assert runs.default_runs_dir() == tmp_path / "data" / "dlf-tui" / "runs"
    first = runs.default_runs_dir()
    monkeypatch.chdir(tmp_path)
    assert runs.default_runs_dir() == first and first.is_absolute()
    monkeypatch.setenv("DLF_TUI_RUNS_DIR", str(tmp_path / "mine"))
    assert runs.default_runs_dir() == tmp_path / "mine"
    monkeypatch.setenv("DLF_TUI_RUNS_DIR", "")  # empty: as if unset
    assert runs.default_runs_dir() == first


def test_runs_says_where_it_looked_and_options_take_precedence(tmp_path, monkeypatch):
    env_dir, before, after = tmp_path / "env", tmp_path / "before", tmp_path / "after"
    for d, rid in ((env_dir, "20250101-000000-env"), (before, "20250101-000000-before"),
                   (after, "20250101-000000-after")):
        fake_run(d, run_id=rid, steps=600, period=50)
    monkeypatch.setenv("DLF_TUI_RUNS_DIR", str(env_dir))
    r = invoke("runs")  # where it looked: on stderr (stdout stays the table)
    assert r.stderr.strip() == f"runs under {env_dir}:" and "-env" in r.stdout
    assert r.stdout.split()[:2] == ["id", "preset"]
    r = invoke("--runs-dir", before, "runs")  # typed before the command beats the variable
    assert r.stderr.strip() == f"runs under {before}:" and "-before" in r.stdout
    r = invoke("--runs-dir", before, "runs", "--runs-dir", after)  # the command's own wins
    assert r.stderr.strip() == f"runs under {after}:" and "-after" in r.stdout
    empty = tmp_path / "empty"
    r = invoke("runs", "--runs-dir", empty)
    assert r.exit_code == 0 and r.stdout.strip() == f"no runs under {empty}"


def test_a_runs_folder_in_the_working_directory_is_pointed_at(tmp_path, monkeypatch):
    fake_run(tmp_path / "runs", run_id="20240101-000000-old", steps=600, period=50)
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "new"
    r = invoke("runs", "--runs-dir", elsewhere)
    assert "./runs holds runs too: --runs-dir runs" in r.stdout
    r = invoke("attach", "20240101-000000-old", "--runs-dir", elsewhere)
    assert r.exit_code == 2 and "--runs-dir runs" in r.stderr
    r = invoke("runs", "--runs-dir", "runs")  # where they are, they keep working
    assert "20240101-000000-old" in r.stdout


def test_presets_wrap_to_the_terminal():
    r = invoke("presets", env={"COLUMNS": "72"})
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 72
    rows = [("short", "shipped", "one two three " * 20), ("a-much-longer-name", "user", "x")]
    out = preset_lines(rows, 60)
    assert max(map(len, out)) <= 60 and " ".join(" ".join(out).split()).count("one two three") == 20
    col = out[0].index("one")
    assert all(line.startswith(" " * col) for line in out[1:-1])  # under its own column
    narrow = preset_lines(rows, 30)  # too narrow for a column: below the name
    assert max(map(len, narrow)) <= 30 and narrow[0].rstrip().endswith("shipped")


def test_offline_sets_data_download_false(tmp_path):
    cfg = common.resolve_config("spiral-fig4", [], None, offline=True)
    assert cfg.data.download is False
    cfg = common.resolve_config("spiral-fig4", ["data.download=true"], None, offline=True)
    assert cfg.data.download is False  # the switch wins over the preset and --set


class Ctx:
    def __init__(self, params, parent=None):
        self.params, self.parent = params, parent


def test_completion_of_runs_presets_and_ctl(tmp_path, monkeypatch):
    rdir = tmp_path / "r"
    fake_run(rdir, run_id="20250101-000000-a", steps=600, period=50)
    fake_run(rdir, run_id="20250102-000000-b", steps=600, period=50, state="stopped")
    got = completion.runs(Ctx({"runs_dir": rdir}), "2025")
    assert got == [("20250102-000000-b", "stopped"), ("20250101-000000-a", "finished")]
    assert completion.runs(Ctx({}, Ctx({"runs_dir": rdir})), "20250101") == [("20250101-000000-a", "finished")]
    assert ("latest", "the most recent run") in completion.runs(Ctx({"runs_dir": rdir}), "")
    names = [n for n, _ in completion.presets(Ctx({}), "spiral")]
    assert "spiral-fig4" in names and all(n.startswith("spiral") for n in names)
    assert [c for c, _ in completion.ctl_commands(Ctx({}), "s")] == ["set", "stop"]
    assert completion.ctl_values(Ctx({"command": "set"}), "a") == [("amplitude=", "A (>= 1)")]
    assert completion.ctl_values(Ctx({"command": "pause"}), "") == []


def test_the_shell_completes_run_ids(tmp_path):
    rdir = tmp_path / "r"
    fake_run(rdir, run_id="20250101-000000-a", steps=600, period=50)
    env = dict(os.environ, _DLF_TUI_COMPLETE="complete_bash", COMP_WORDS="dlf-tui attach 2025",
               COMP_CWORD="2", DLF_TUI_RUNS_DIR=str(rdir))
    out = subprocess.run([sys.executable, "-m", "dlf_tui"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.split() == ["20250101-000000-a"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "dlf-tui run spiral-f", "2"
    out = subprocess.run([sys.executable, "-m", "dlf_tui"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert "spiral-fig4" in out.stdout.split()
    out = subprocess.run([sys.executable, "-m", "dlf_tui", "--show-completion", "bash"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and "_DLF_TUI_COMPLETE=complete_bash" in out.stdout  # named dlf-tui


@pytest.mark.parametrize("args", [["--runs-dir"], ["runs", "--nope"]])
def test_usage_errors_stay_one_line(args):
    out = subprocess.run([sys.executable, "-m", "dlf_tui", *args], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: ")
