"""export --tensorboard: a real run (with an edit, held-out evaluations and
diagnostics) and a real sweep, exported and read back from the event files.

The files are parsed here independently of the exporter: the TFRecord framing
(uint64 length, masked CRC-32C of it, data, masked CRC-32C of the data, checked
with tensorboardX's own crc32c) and each record decoded with tensorboardX's
protobuf classes; every value is compared with the run's series as float32.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlf_tui.cli.main import app
from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps

from .conftest import LiveRun, tiny_config

pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2, plugin_hparams_pb2  # noqa: E402
from tensorboardX.record_writer import masked_crc32c  # noqa: E402

runner = CliRunner()
C = 3
# column → tag, spelled out here (not taken from the exporter)
METRIC_TAGS = {"loss_dynamical": "loss/F", "loss_ce": "loss/CE", "accuracy": "accuracy/train",
               **{f"accuracy_class_{i}": f"accuracy/class_{i}" for i in range(C)},
               **{f"gamma_{i}": f"gamma/{i}" for i in range(C)},
               "amplitude": "schedule/amplitude", "period": "schedule/period", "lr": "schedule/lr",
               "grad_norm": "gradient/norm"}
EVAL_TAGS = {"val_loss_ce": "held_out/CE", "val_accuracy": "held_out/accuracy",
             **{f"val_accuracy_class_{i}": f"held_out/class_{i}" for i in range(C)}}
DIAG_TAGS = {"hessian_lambda_max": "landscape/hessian_lambda_max", "ntk_lambda_max": "landscape/ntk_lambda_max",
             "hessian_iters": "landscape/hessian_iters", "seconds": "landscape/seconds"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, text: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert text in lines[0], lines[0]


def read_records(path: Path) -> list[bytes]:
    data, out, off = path.read_bytes(), [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<Q", data, off)
        (hcrc,) = struct.unpack_from("<I", data, off + 8)
        assert hcrc == masked_crc32c(data[off:off + 8]), f"bad length crc at {off}"
        body = data[off + 12:off + 12 + n]
        (dcrc,) = struct.unpack_from("<I", data, off + 12 + n)
        assert dcrc == masked_crc32c(body), f"bad data crc at {off}"
        out.append(body)
        off += 16 + n
    assert off == len(data)
    return out


class Board:
    """Everything in one TensorBoard run directory, by tag."""

    def __init__(self, directory: Path):
        files = sorted(directory.glob("events.out.tfevents.*"))
        assert len(files) == 1, files
        self.records = read_records(files[0])
        self.events = [event_pb2.Event.FromString(r) for r in self.records]
        assert self.events[0].file_version == "brain.Event:2"
        self.scalars: dict[str, dict[int, float]] = defaultdict(dict)
        self.walls: dict[str, list[float]] = defaultdict(list)
        self.texts: dict[str, dict[int, str]] = defaultdict(dict)
        self.values: dict[str, list] = defaultdict(list)  # plugin summaries by tag
        for ev in self.events[1:]:
            for v in ev.summary.value:
                if v.WhichOneof("value") == "simple_value":
                    assert ev.step not in self.scalars[v.tag], (v.tag, ev.step)
                    self.scalars[v.tag][ev.step] = v.simple_value
                    self.walls[v.tag].append(ev.wall_time)
                elif v.metadata.plugin_data.plugin_name == "text":
                    assert ev.step not in self.texts[v.tag]
                    self.texts[v.tag][ev.step] = v.tensor.string_val[0].decode("utf-8")
                else:
                    self.values[v.tag].append((ev.step, v))

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        pts = sorted(self.scalars[tag].items())
        return np.array([s for s, _ in pts]), np.array([v for _, v in pts], dtype=np.float32)


def assert_series(board: Board, tag: str, steps, values) -> None:
    keep = np.isfinite(values)
    got_steps, got = board.series(tag)
    np.testing.assert_array_equal(got_steps, np.asarray(steps)[keep].astype(np.int64), err_msg=tag)
    np.testing.assert_array_equal(got, np.asarray(values)[keep].astype(np.float32), err_msg=tag)


@pytest.fixture(scope="module")
def edited_run(tmp_path_factory):
    """A real engine run with held-out evaluations, diagnostics and a live edit, then stopped."""
    cfg = tiny_config("data.val_seed=1", "data.eval_every=100", "diagnostics.enabled=true",
                      "diagnostics.every=50", "diagnostics.ntk_every=100", "diagnostics.ntk_size=20")
    run = runs.create_run(cfg, tmp_path_factory.mktemp("runs"))
    proc = launch.spawn_run_engine(run)
    live = LiveRun(run, proc)
    try:
        launch.wait_until_listening(run, proc)
        live.wait_rows(300)
        r = invoke("ctl", run.path, "set", "amplitude=3", "period=40")
        assert r.exit_code == 0, r.output
        live.wait_rows(run.rows() + 300)
        assert invoke("ctl", run.path, "stop").exit_code == 0
        assert live.wait_exit(60) == 0
    finally:
        live.kill()
    return run


@pytest.fixture(scope="module")
def exported(edited_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    r = invoke("export", edited_run.path, "--tensorboard", out)
    assert r.exit_code == 0, r.output
    n = edited_run.rows()
    assert f"({n:,} updates)" in r.stdout and str(out / edited_run.id) in r.stdout
    return out, Board(out / edited_run.id)


def test_every_series_at_its_update(edited_run, exported):
    _, board = exported
    run = edited_run
    m, cols = run.read(), run.columns()
    assert set(cols) - {"step"} == set(METRIC_TAGS)
    for col, tag in METRIC_TAGS.items():
        assert_series(board, tag, m[:, 0], m[:, cols.index(col)])
    e, ecols = run.read("eval"), run.columns("eval")
    assert len(e) >= 3
    for col, tag in EVAL_TAGS.items():
        assert_series(board, tag, e[:, 0], e[:, ecols.index(col)])
    d, dcols = run.read("diag"), run.columns("diag")
    assert len(d) >= 4 and np.isnan(d[:, dcols.index("ntk_lambda_max")]).any()
    for col, tag in DIAG_TAGS.items():
        assert_series(board, tag, d[:, 0], d[:, dcols.index(col)])  # NaN (not computed) left out
    assert_series(board, "landscape/2_over_lr", d[:, 0], 2.0 / d[:, dcols.index("lr")])
    want = set(METRIC_TAGS.values()) | set(EVAL_TAGS.values()) | set(DIAG_TAGS.values()) | {"landscape/2_over_lr"}
    assert set(board.scalars) == want
    # the edit shows in the schedule's scalars from its update on
    amp = board.series("schedule/amplitude")[1]
    assert amp[0] == 10 and 3 in amp


def test_records_are_what_protobuf_writes_and_times_are_ordered(edited_run, exported):
    _, board = exported
    m, cols = edited_run.read(), edited_run.columns()
    first = next(i for i, ev in enumerate(board.events) if ev.step == int(m[0, 0])
                 and ev.summary.value and ev.summary.value[0].tag == "loss/F")
    ev = board.events[first]
    assert [v.tag for v in ev.summary.value] == [METRIC_TAGS[c] for c in cols[1:]]
    again = event_pb2.Event(step=ev.step, wall_time=ev.wall_time)
    for c, v in zip(cols[1:], m[0, 1:]):
        again.summary.value.add(tag=METRIC_TAGS[c], simple_value=float(v))
    assert again.SerializeToString() == board.records[first]
    walls = np.array(board.walls["loss/F"])
    st = edited_run.raw_state()
    assert (np.diff(walls) >= 0).all()
    assert st["started"] - 1 <= walls[0] <= walls[-1] <= st["ended"] + 1


def test_events_and_config_as_text(edited_run, exported):
    _, board = exported
    evs = edited_run.events()
    kinds = [e["kind"] for e in evs]
    assert "set" in kinds and "start" in kinds
    texts = board.texts["events"]
    for e in evs:
        assert f"[{e['kind']}] {e['message']}" in texts[int(e["step"])], e
    edit = next(e for e in evs if e["kind"] == "set")
    assert "amplitude" in texts[int(edit["step"])]
    assert "amplitude = 10" in board.texts["config"][0].replace("    ", "")
    # the custom-scalars layout overlays F with CE and λ_max with 2/η
    [(step, layout)] = board.values["custom_scalars__config__"]
    raw = layout.tensor.string_val[0]
    assert step == 0 and b"loss/CE" in raw and b"landscape/2_over_lr" in raw


def test_reexport_replaces_the_file(edited_run, exported):
    out, board = exported
    assert invoke("export", edited_run.path, "--tensorboard", out).exit_code == 0
    again = Board(out / edited_run.id)  # still one file
    assert again.records == board.records
    assert sorted(p.name for p in (out / edited_run.id).iterdir())[0].startswith("events.out.tfevents.")


def test_missing_extra_is_one_line(edited_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # the import fails
    r = invoke("export", edited_run.path, "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --tensorboard needs tensorboardX: pip install 'dlf-tui[tensorboard]'"
    assert not (tmp_path / "tb").exists()


def test_bad_targets_are_one_line(edited_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(invoke("export", edited_run.path, "--tensorboard", blocker / "tb"), "cannot write")
    empty = runs.create_run(tiny_config(), tmp_path / "runs")
    one_line_error(invoke("export", empty.path, "--tensorboard", tmp_path / "tb"), "no metrics yet")


def test_the_tensorboardx_import_does_not_import_torch(tmp_path):
    import subprocess

    code = ("import sys; from dlf_tui.export import tensorboard as t; t._tbx(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# sweeps: one TensorBoard run per member and the HParams table
# ---------------------------------------------------------------------------


def hparams_of(board: Board) -> dict[str, plugin_hparams_pb2.HParamsPluginData]:
    out = {}
    for tag, items in board.values.items():
        if tag.startswith("_hparams_/"):
            [(step, v)] = items
            assert v.metadata.plugin_data.plugin_name == "hparams"
            out[tag] = (step, plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content))
    return out


def test_real_sweep_members_and_hparams(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(config.to_toml(tiny_config("data.val_seed=1", "data.eval_every=50", name="tiny")))
    rdir, out = tmp_path / "runs", tmp_path / "tb"
    r = invoke("sweep", preset, "--set", "schedule.amplitude=1,10", "--seeds", "2", "--steps", "200",
               "--device", "cpu", "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    [sw] = sweeps.list_sweeps(rdir)
    r = invoke("export", sw.id, "--tensorboard", out, "--runs-dir", rdir)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"wrote 4 members (") and str(out / sw.id) in r.stdout
    assert sorted(p.name for p in (out / sw.id).iterdir()) == sorted(m.id for m in sw.members)
    for m in sw.members:
        board = Board(out / sw.id / m.id)
        mm, cols = m.run.read(), m.run.columns()
        assert_series(board, "accuracy/train", mm[:, 0], mm[:, cols.index("accuracy")])
        hp = hparams_of(board)
        assert set(hp) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
        step, exp = hp["_hparams_/experiment"]
        infos = {i.name: i for i in exp.experiment.hparam_infos}
        assert list(infos) == ["schedule.amplitude", "seed"]
        assert [v.number_value for v in infos["schedule.amplitude"].domain_discrete.values] == [1.0, 10.0]
        assert [v.number_value for v in infos["seed"].domain_discrete.values] == list(map(float, sw.seeds))
        assert [mi.name.tag for mi in exp.experiment.metric_infos] == ["accuracy/train", "held_out/accuracy"]
        _, start = hp["_hparams_/session_start_info"]
        got = {k: v.number_value for k, v in start.session_start_info.hparams.items()}
        assert got == {"schedule.amplitude": float(m.cell[0]), "seed": float(m.seed)}
        last_step, end = hp["_hparams_/session_end_info"]
        assert end.session_end_info.status == 1  # STATUS_SUCCESS
        assert last_step == 200 == max(board.scalars["accuracy/train"])
        # the metrics the table shows: the last point of these tags
        assert board.scalars["accuracy/train"][200] == np.float32(m.run.last_row()["accuracy"])
        ev = m.run.last_row("eval")
        assert board.scalars["held_out/accuracy"][int(ev["step"])] == np.float32(ev["val_accuracy"])


def test_sweep_with_list_axis_and_a_pending_member(tmp_path):
    plan = sweeps.plan(tiny_config(), ["model.hidden=[16],[8,8]"], seeds=1)
    sw = sweeps.create(plan, tmp_path / "runs")
    done, pending = sw.members
    cols = (["step", "loss_dynamical", "loss_ce", "accuracy"] + [f"accuracy_class_{i}" for i in range(C)]
            + [f"gamma_{i}" for i in range(C)] + ["amplitude", "period", "lr", "grad_norm"])
    rows = np.column_stack([np.arange(1, 51)] + [np.linspace(0.1, 0.9, 50)] * (len(cols) - 1))
    w = runs.SeriesWriter(done.run.path, "metrics", cols)
    w.append(rows)
    w.close()
    runs.write_json_atomic(done.run.file(runs.STATE), {"state": "crashed", "pid": 0})
    out = tmp_path / "tb"
    r = invoke("export", sw.path, "--tensorboard", out)
    assert r.exit_code == 0, r.output
    assert "wrote 1 members" in r.stdout and "1 without metrics yet" in r.stdout
    assert [p.name for p in (out / sw.id).iterdir()] == [done.id]
    board = Board(out / sw.id / done.id)
    hp = hparams_of(board)
    exp = hp["_hparams_/experiment"][1].experiment
    hidden = next(i for i in exp.hparam_infos if i.name == "model.hidden")
    assert [v.string_value for v in hidden.domain_discrete.values] == [json.dumps([16]), json.dumps([8, 8])]
    assert [mi.name.tag for mi in exp.metric_infos] == ["accuracy/train"]  # no held-out data
    start = hp["_hparams_/session_start_info"][1].session_start_info
    assert start.hparams["model.hidden"].string_value == "[16]"
    assert hp["_hparams_/session_end_info"][1].session_end_info.status == 2  # STATUS_FAILURE
    # a sweep where no member has metrics yet
    sw2 = sweeps.create(sweeps.plan(tiny_config(), ["schedule.amplitude=1,2"], seeds=1), tmp_path / "runs")
    one_line_error(invoke("export", sw2.path, "--tensorboard", out), "no member has metrics yet")
