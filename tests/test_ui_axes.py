"""What the charts draw: round 1-2-5 y ticks (log and linear), the sharpness
chart's two axes and its stability line per optimiser (and the PNG's), every
class visible where the Γ lines meet, whole event kinds, the GPU status."""

from __future__ import annotations

import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ui_support import fake_run, isolated, sync  # noqa: E402,F401

from dlf_tui.core import config, presets  # noqa: E402
from dlf_tui.ui import fmt  # noqa: E402
from dlf_tui.ui.app import DlfApp  # noqa: E402
from dlf_tui.ui.gpu import GIB, GpuProbe, gpu_text, nvml_index  # noqa: E402
from dlf_tui.core.stability import stability  # noqa: E402
from dlf_tui.ui.widgets.charts.base import CLASS_COLORS, shared_cells  # noqa: E402
from dlf_tui.ui.widgets.charts.plotext_adapter import rich_color  # noqa: E402
from dlf_tui.ui.widgets.event_log import EventLog  # noqa: E402
from dlf_tui.ui.widgets.status_bar import StatusBar  # noqa: E402


def one_two_five(v: float) -> bool:
    m = abs(v) / 10 ** math.floor(math.log10(abs(v)) + 1e-9)
    return any(abs(m - k) < 1e-6 for k in (1, 2, 5))


def round_step(ticks: list[float]) -> bool:
    """Evenly spaced by 1, 2 or 5 times a power of ten, each a multiple of it."""
    if len(ticks) < 2:
        return True
    step = float(f"{ticks[1] - ticks[0]:.6g}")
    return (one_two_five(step) and all(abs((b - a) - step) < 1e-6 * step for a, b in zip(ticks, ticks[1:]))
            and all(abs(t / step - round(t / step)) < 1e-6 for t in ticks))


@given(st.floats(1e-8, 1e6), st.floats(1.01, 1e7), st.integers(2, 8))
@hsettings(max_examples=300, deadline=None)
def test_log_ticks_are_one_two_five(lo, ratio, n):
    hi = lo * ratio
    ticks = fmt.log_ticks(lo, hi, n)
    assert ticks and len(ticks) <= max(n, 4)
    assert all(lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9) for t in ticks)
    assert all(one_two_five(t) for t in ticks) or round_step(ticks)
    a, b, axis_ticks = fmt.axis(lo, hi, n, log=True)
    assert a <= lo * (1 + 1e-9) and b >= hi * (1 - 1e-9) and one_two_five(a) and one_two_five(b)
    assert all(one_two_five(t) for t in axis_ticks) or round_step(axis_ticks)


@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6), st.integers(2, 8))
@hsettings(max_examples=300, deadline=None)
def test_linear_ticks_step_by_one_two_five(lo, span, n):
    span = max(span, 1e-6 * abs(lo))  # (not below float64's resolution there)
    hi = lo + span
    ticks = fmt.nice_ticks(lo, hi, n)
    assert 1 <= len(ticks) <= n and round_step(ticks)
    a, b, axis_ticks = fmt.axis(lo, hi, n)
    assert a <= lo + 1e-9 * span and b >= hi - 1e-9 * span and round_step(axis_ticks)
    assert axis_ticks[0] == pytest.approx(a) and axis_ticks[-1] == pytest.approx(b)


def test_the_issues_numbers_get_round_ticks():
    assert fmt.axis(0.443, 5.347, 4, log=True)[2] == [0.2, 1.0, 5.0]  # not 5.347 / 2.330 / 1.016 / 0.443
    assert fmt.axis(1.96, 2.91, 4)[2] == [1.5, 2.0, 2.5, 3.0]  # not 2.91 / 2.43 / 1.96
    assert [fmt.tick(v) for v in (0.5, 2, 0.02, 1e-4, 20000, 1e6)] == ["0.5", "2", "0.02", "1e-4", "20k", "1M"]


async def loaded(pilot):
    app = pilot.app
    for _ in range(500):
        d = app.dashboard
        if d is not None and d.history_loaded and d.redraws and all(
                c.has_data for c in d.charts if c.display and c.id != "sharpness"):
            return d
        await pilot.pause(0.02)
    raise AssertionError("the fake run did not load")


async def sharp_loaded(pilot, dash):
    sharp = dash.query_one("#sharpness")
    for _ in range(500):
        if sharp.has_data and sharp.points > 10:
            return sharp
        await pilot.pause(0.02)
    raise AssertionError("no sharpness drawn")


def text_of(chart) -> str:
    return "\n".join(s.text for s in chart.rendered_strips())


@sync
async def test_chart_y_labels_are_one_two_five(isolated):
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        loss, gamma = dash.query_one("#loss"), dash.query_one("#gamma")
        assert "left" in loss.ylog and len(loss.yticks["left"]) >= 2
        assert all(one_two_five(t) for t in loss.yticks["left"])
        assert "left" not in gamma.ylog and round_step(gamma.yticks["left"]) and len(gamma.yticks["left"]) >= 3
        for chart in (loss, gamma):  # the labels are on the screen
            text = text_of(chart)
            for t in chart.yticks["left"]:
                assert f"{fmt.tick(t)}┤" in text, (chart.id, t)
        assert round_step(dash.query_one("#accuracy").yticks["left"])


def rows_with(chart, color: str) -> set[int]:
    want = rich_color(color)
    return {y for y, strip in enumerate(chart.rendered_strips())
            for seg in strip if seg.style is not None and seg.style.color == want and seg.text.strip()}


@sync
async def test_both_sharpness_series_get_a_readable_scale(isolated):
    # NTK λ_max five orders of magnitude above the Hessian's, as on the spiral
    run = fake_run(isolated / "runs", diag=True, ntk_scale=5e4, ntk_falling=True)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        sharp = await sharp_loaded(pilot, dash)
        assert sharp.sides == {"hessian_lambda_max": "left", "ntk_lambda_max": "right"}
        assert sharp.ylog == {"left", "right"} and sharp.yticks["left"] and sharp.yticks["right"]
        assert max(sharp.yticks["left"]) < 20 and min(sharp.yticks["right"]) > 1000
        plot_rows = sharp.size.height - 2
        hessian, ntk = rows_with(sharp, CLASS_COLORS[0]), rows_with(sharp, CLASS_COLORS[1])
        # λ_max rises from 0.24 to 2: on its own axis it spans much of the chart's height
        assert len(hessian) >= plot_rows // 3 and len(ntk) >= plot_rows // 3
        title = str(sharp.border_title)
        assert "Hessian" in title and "NTK" in title and "2/η" in title
        assert sharp.edge_label == "2/η"
    small = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with small.run_test(size=(120, 40)) as pilot:  # 120 columns: the title fits
        dash = await loaded(pilot)
        sharp = await sharp_loaded(pilot, dash)
        from rich.text import Text

        assert Text.from_markup(str(sharp.border_title)).cell_len + 4 <= sharp.outer_size.width


@pytest.mark.parametrize("optim,label,value", [
    (("optim.name=gd", "optim.lr=1"), "2/η", 2.0),
    (("optim.name=sgd", "optim.momentum=0.9", "optim.lr=1"), "2(1+β)/η", 3.8),
    (("optim.name=adam", "optim.lr=1"), "", None),
])
@sync
async def test_the_stability_line_is_the_optimisers(isolated, optim, label, value):
    run = fake_run(isolated / "runs", diag=True, extra=optim)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(160, 48)) as pilot:
        dash = await loaded(pilot)
        sharp = await sharp_loaded(pilot, dash)
        status = str(dash.query_one(StatusBar).render())
        assert sharp.edge_label == label
        if value is None:
            assert "·" not in str(sharp.border_title) and "Adam" in str(sharp.border_subtitle)
            assert "λmax 1.9" in status and "2/η" not in status
        else:
            assert label in str(sharp.border_title)
            assert f"λmax 1.9 < {label} {fmt.num(value)}" in status
            red = rows_with(sharp, "red+")
            assert red  # the line is drawn


def preset_doc(name: str) -> dict:
    return tomllib.loads(config.to_toml(presets.find(name)))


def test_stability_line_of_the_shipped_presets():
    gd = stability(preset_doc("spiral-fig4")).edge
    assert gd.label == "2/η" and gd.at(1.0) == pytest.approx(2.0)
    sgd = stability(preset_doc("cifar10-myrtle5")).edge  # SGD lr 0.02, momentum 0.9
    assert sgd.label == "2(1+β)/η" and sgd.at(0.02) == pytest.approx(2 * 1.9 / 0.02) and "0.9" in sgd.note
    mnist = stability(preset_doc("mnist-mlp")).edge  # SGD lr 0.05, momentum 0.9
    assert mnist.at(0.05) == pytest.approx(76.0)
    adam = stability({"optim": {"name": "adam", "lr": 1e-3}})
    assert adam.edge is None and "preconditioned" in adam.why_none
    assert stability({"optim": {"name": "sgd", "momentum": 0.0}}).edge.factor == 2.0
    assert stability({"optim": {"name": "external"}}).edge is None
    assert stability({}).edge.label == "2/η"  # gradient descent is the default


@pytest.mark.parametrize("optim,label,value", [
    ((), "2/η", 2.0), (("optim.name=sgd", "optim.momentum=0.9"), "2(1+β)/η (β = 0.9)", 3.8),
    (("optim.name=adam",), None, None)])
def test_png_draws_the_optimisers_line(isolated, optim, label, value):
    pytest.importorskip("matplotlib")
    from dlf_tui.export.png import figure

    fig = figure(fake_run(isolated / "runs", diag=True, extra=optim))
    try:
        ax = next(a for a in fig.axes if a.get_ylabel() == "Hessian λmax")
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        if label is None:
            assert not any("η" in k for k in lines)
            assert any("Adam" in t.get_text() for t in ax.texts)
        else:
            assert np.allclose(lines[label].get_ydata(), value)
        ntk = next(a for a in fig.axes if a.get_ylabel() == "NTK λmax")
        assert ntk.get_yscale() == "log" and ax.get_yscale() == "log"  # each its own axis
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_shared_cells_give_every_class_its_turn():
    y = np.full(30, 2.0)
    masks = shared_cells([[y], [y.copy()], [y.copy()]], rows=10)
    owns = [m[0][0] for m in masks]
    assert all(o.sum() == 10 for o in owns)  # each class keeps every third column
    assert not np.any(owns[0] & owns[1]) and np.all(owns[0] | owns[1] | owns[2])
    apart = shared_cells([[np.zeros(5)], [np.ones(5)]], rows=10)
    assert all(m[0][1].all() for m in apart)  # apart: each alone everywhere


@sync
async def test_every_class_stays_visible_where_the_gamma_lines_meet(isolated):
    # a whole long run at 80×24: every column spans whole periods, every class's band the same cells
    run = fake_run(isolated / "runs", steps=60000, period=500, amplitude=20)
    app = DlfApp(runs_dir=isolated / "runs", attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = await loaded(pilot)
        gamma = dash.query_one("#gamma")
        counts = [sum(1 for strip in gamma.rendered_strips() for seg in strip
                      if seg.style is not None and seg.style.color == rich_color(CLASS_COLORS[i])
                      for ch in seg.text if ch.strip())
                  for i in range(3)]
        assert min(counts) >= 10 and min(counts) * 3 >= max(counts), counts


async def events_logged(isolated, size: tuple[int, int], *events: tuple[int, str, str]):
    """The dashboard's event log at ``size`` after ``events`` (step, kind, message) were added."""
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=size) as pilot:
        log = (await loaded(pilot)).query_one(EventLog)
        for event in events:
            log.add(*event)
        await pilot.pause()
        return log.scrollable_content_region.width, [line.text for line in log.lines]


@sync
async def test_event_kinds_are_never_cut(isolated):
    _, lines = await events_logged(isolated, (80, 24), (65014, "static_tail", "the last period is plain CE"),
                                   (70000, "edge_of_stability", "λ_max went above 2/η"))
    text = "\n".join(lines)
    assert "static_tail" in text and "edge_of_stability" in text and "…" not in text


@sync
async def test_a_long_event_wraps_in_a_narrow_events_pane(isolated):
    message = "starting spiral-fig4: creating the run directory and its engine, wordy on purpose"
    width, lines = await events_logged(isolated, (120, 40), (0, "ui", message))
    assert width < 78  # the pane is narrower than RichLog's default render width
    lines = [line.rstrip() for line in lines]
    assert max(len(line) for line in lines) <= width
    assert " ".join(" ".join(lines).split()).endswith(message)


class FakeNVML:
    class Mem:
        used, total = 3.2 * GIB, 80 * GIB

    class Util:
        gpu = 97

    def __init__(self) -> None:
        self.asked = []

    def nvmlDeviceGetHandleByIndex(self, i):
        self.asked.append(i)
        return i

    def nvmlDeviceGetHandleByUUID(self, u):
        self.asked.append(u)
        return u

    def nvmlDeviceGetMemoryInfo(self, h):
        return self.Mem()

    def nvmlDeviceGetUtilizationRates(self, h):
        return self.Util()


def test_gpu_text_and_device_mapping(monkeypatch):
    assert gpu_text(3.2 * GIB, 80 * GIB, 97) == "GPU 3.2/80 GiB 97%"
    assert gpu_text(12.4 * GIB, 141 * GIB, None, 1) == "GPU1 12/141 GiB"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index("cuda") == 0 and nvml_index("cuda:2") == 2 and nvml_index("cpu") is None
    assert nvml_index("cuda:1", "3,5") == 5 and nvml_index("cuda:2", "3,5") is None
    assert nvml_index("cuda", "GPU-abc") == "GPU-abc"
    nv = FakeNVML()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    assert GpuProbe(nv).read("cuda:0") == "GPU4 3.2/80 GiB 97%" and nv.asked == [4]
    assert GpuProbe(nv).read("cpu") == ""


@sync
async def test_the_status_bar_shows_the_gpu_of_a_live_cuda_run(isolated, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    app = DlfApp(runs_dir=isolated / "runs", attach=fake_run(isolated / "runs"))
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await loaded(pilot)
        bar = dash.query_one(StatusBar)
        assert "GPU" not in str(bar.render())  # a CPU run: nothing
        dash.gpu = GpuProbe(FakeNVML())
        dash.session.device, dash.session.live = "cuda", True
        for _ in range(200):  # the reading comes from a short thread
            dash.update_status()
            if "GPU 3.2/80 GiB 97%" in str(bar.render()):
                break
            await pilot.pause(0.02)
        assert "GPU 3.2/80 GiB 97%" in str(bar.render())
        dash.gpu = GpuProbe()  # no NVML here (or no driver): nothing, never an error
        dash.gpu._failed = True
        dash.update_status()
        assert "GPU" not in str(bar.render())
