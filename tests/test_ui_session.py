"""RunSession without Textual: the pump on a run from disk, gap filling; and
the latest-value messages coalescing in a real Textual queue."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated  # noqa: E402,F401

from dlf_tui.wire import protocol  # noqa: E402
from dlf_tui.ui import messages as M  # noqa: E402
from dlf_tui.ui.session.base import RunSession  # noqa: E402
from dlf_tui.ui.session.disk import DiskSource  # noqa: E402
from dlf_tui.ui.session.live import LiveSource  # noqa: E402
from dlf_tui.ui.session.pump import pump  # noqa: E402


def test_a_finished_run_opens_read_only_from_disk(isolated):
    run = fake_run(isolated / "runs", steps=6000, edit_at=3000)
    s = RunSession(run)
    posted = []
    pump(s, posted.append, lambda: False)
    types = [type(m) for m in posted]
    assert types[0] is M.RunStarted and not posted[0].live
    assert M.HistoryLoaded in types and types[-1] is M.RunEnded
    assert s.state == "finished" and not s.live
    assert s.history.rows == 6000 and s.history.eval_rows == run.rows("eval")
    assert s.params["amplitude"] == 10.0  # the last value set (events.jsonl), not the config's 20
    assert [m.step for m in s.timeline.markers] == [3000]
    logged = [(m.kind, m.step) for m in posted if isinstance(m, M.EventLogged)]
    assert logged[0] == ("start", 1) and ("finish", 6000) in logged
    pos = s.timeline.at(6000)
    assert pos.index == 6000 // 501 + 1 and pos.cls == ((6000 - 1) // 501) % 3


def test_missing_rows_are_read_from_disk_and_notifications_coalesce(isolated):
    run = fake_run(isolated / "runs", steps=6000)
    s = RunSession(run)
    live = LiveSource(s, DiskSource(s))
    s.history.setup(run.columns("metrics"), run.columns("eval"))
    s.history.add_metrics(0, run.read("metrics", 0, 1000))
    posted = []
    chunk = protocol.Metrics.pack(3000, run.columns("metrics"), run.read("metrics", 3000, 3500))
    live.dispatch(protocol.decode_any(chunk.to_json()), posted.append)
    assert s.history.rows == 3500  # 1000..3000 came from disk
    v = s.history.query("metrics", 2501, 3500, 1000, ["step", "loss_ce"])
    np.testing.assert_array_equal(v.x, np.arange(2501, 3501))
    np.testing.assert_allclose(v.mean[:, 1], run.read("metrics", 2500, 3500)[:, 2])
    whole = s.history.query("metrics", 1, 3500, 1, ["step", "loss_ce"])
    assert abs(whole.mean[0, 1] - run.read("metrics", 0, 3500)[:, 2].mean()) < 1e-12
    # every chunk is a fact; the dashboard's queue keeps only the newest of a run of
    # them (Message.can_replace: see test_latest_value_messages_coalesce_in_the_queue)
    chunk = protocol.Metrics.pack(3500, run.columns("metrics"), run.read("metrics", 3500, 3600))
    live.dispatch(chunk, posted.append)
    assert [type(m) for m in posted] == [M.MetricsArrived, M.MetricsArrived]
    assert (posted[1].start, posted[1].rows) == (3500, 100)
    # state: only changes of state are posted; step and rate are read at redraw
    for step in (3700, 3800):
        live.dispatch(protocol.State(state="running", step=step, total=6000, rate=100.0), posted.append)
    assert sum(isinstance(m, M.StateChanged) for m in posted) == 1 and s.step == 3800


def test_a_crashed_run_opens_read_only_with_its_reason(isolated):
    run = fake_run(isolated / "runs", steps=2000, state="crashed")
    s = RunSession(run)
    posted = []
    pump(s, posted.append, lambda: False)
    assert s.state == "crashed" and not s.live and s.history.rows == 2000
    assert isinstance(posted[-1], M.RunEnded) and posted[-1].state == "crashed"


def test_live_log_lines_keep_their_kind_and_skip_those_read_from_disk(isolated):
    run = fake_run(isolated / "runs", steps=2000, edit_at=1000)
    s = RunSession(run)
    disk = DiskSource(s)
    live = LiveSource(s, disk)
    posted = []
    disk.load_events(posted.append)
    first = run.events()[0]
    live.dispatch(protocol.Log(level="info", message=first["message"], step=int(first["step"]),
                               kind=first["kind"]), posted.append)  # already posted from disk
    live.dispatch(protocol.Log(level="info", message="amplitude 70 → 30", step=1200, kind="set"),
                  posted.append)
    logged = [(m.step, m.kind, m.message) for m in posted if isinstance(m, M.EventLogged)]
    assert len(logged) == len(run.events()) + 1
    assert logged[-1] == (1200, "set", "amplitude 70 → 30")


def test_latest_value_messages_coalesce_in_the_queue():
    """Fifty MetricsArrived posted while the UI is busy reach the handler once
    (the newest); facts that are not latest-value (EventLogged) all arrive."""
    import asyncio

    from textual.app import App
    from textual.widget import Widget

    class Sink(Widget):
        def __init__(self) -> None:
            super().__init__()
            self.got: list = []

        def on_metrics_arrived(self, msg: M.MetricsArrived) -> None:
            self.got.append(("metrics", msg.start))

        def on_state_changed(self, msg: M.StateChanged) -> None:
            self.got.append(("state", msg.step))

        def on_event_logged(self, msg: M.EventLogged) -> None:
            self.got.append(("event", msg.step))

    class Busy(App):
        def compose(self):
            yield Sink()

    async def go():
        app = Busy()
        async with app.run_test() as pilot:
            sink = app.query_one(Sink)
            for i in range(50):  # all queued before the widget runs again
                sink.post_message(M.MetricsArrived(i, 1))
            for i in range(3):
                sink.post_message(M.StateChanged("running", i, 10, 1.0))
            for i in range(3):
                sink.post_message(M.EventLogged(i, "ui", "x"))
            await pilot.pause()
            return sink.got

    got = asyncio.run(go())
    assert got == [("metrics", 49), ("state", 2), ("event", 0), ("event", 1), ("event", 2)]
    assert M.MetricsArrived(1, 2).can_replace(M.MetricsArrived(3, 4))
    assert not M.MetricsArrived(1, 2).can_replace(M.EvalArrived(3, 4))
    assert not M.EventLogged(1, "a", "b").can_replace(M.EventLogged(1, "a", "b"))
