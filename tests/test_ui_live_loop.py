"""The dashboard attached to a user's own loop (dlf_tui.live.Run in a subprocess):
history, live charts, and keys that reach the loop between its updates."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")  # a real engine trains here (the floor check of .ci/run has no torch)

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import sync  # noqa: E402
from test_ui_live import kinds, open_live, status_text, until  # noqa: E402

from dlf_tui.core import states  # noqa: E402
from dlf_tui.store import run as runs  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "live_loop.py"


@sync
async def test_the_dashboard_follows_and_steers_a_live_loop(tmp_path):
    rdir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--steps", "10000000", "--runs-dir",
                             str(rdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = runs.Run(Path(proc.stdout.readline().split(" ", 1)[1].strip()))
        deadline = time.monotonic() + 60
        while not (run.is_live() and run.file(runs.SOCKET).exists()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        app = DlfApp(runs_dir=rdir, attach=run)
        async with app.run_test(size=(120, 40)) as pilot:
            dash = await open_live(pilot, app, rows=500)
            for chart in ("loss", "gamma", "accuracy"):
                assert dash.query_one(f"#{chart}").points > 10
            await until(pilot, lambda: "RUNNING" in status_text(app))
            await pilot.press("plus")  # A × 1.25 → 12.5, applied by the loop's run.step()
            await until(pilot, lambda: kinds(run, "set"), what="the edit's event")
            [ev] = kinds(run, "set")
            assert ev["changes"] == {"amplitude": 12.5}
            await until(pilot, lambda: app.session.params.get("amplitude") == 12.5)
            await pilot.press("space")
            await until(pilot, lambda: run.state()["state"] == states.PAUSED, what="paused")
            await until(pilot, lambda: "PAUSED" in status_text(app))
            await pilot.press("space")
            await until(pilot, lambda: run.state()["state"] == states.RUNNING, what="resumed")
        k = ev["step"]
        deadline = time.monotonic() + 30
        while run.rows() < k:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        m = run.read("metrics")
        amp = m[:, run.columns().index("amplitude")]
        assert amp[k - 2] == 10 and amp[k - 1] == 12.5  # rows of updates k−1 and k
    finally:
        proc.kill()
        proc.wait(10)
