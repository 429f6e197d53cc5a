"""The paper's Fig. 4 as a PNG: ``dlf-tui export RUN --png FILE``.

One column of panels against the update: Γ_i(t), F, F(t−1) − F(t), accuracy,
Hessian λ_max (with the stability line of the run's optimiser: 2/η for gradient
descent, 2(1+β)/η for heavy-ball momentum, none for Adam; ``core/stability.py``)
and NTK λ_max, each on its own log axis — the last two only when the run
computed them.  ``export SWEEP --png``: heatmaps of a sweep's mean final
accuracy per cell (``write_sweep_png``).  matplotlib is an optional extra
(``pip install 'dlf-tui[plot]'``).  No torch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from dlf_tui.core import series
from dlf_tui.core.errors import FigureError, RunError
from dlf_tui.store import run as runs
from dlf_tui.store import sweep as sweeps
from dlf_tui.core.stability import stability  # plain arithmetic: no textual

def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FigureError("--png needs matplotlib: pip install 'dlf-tui[plot]'") from None
    return plt


def parse_window(text: str | None) -> tuple[int, int] | None:
    """``"60000:70000"`` → (60000, 70000): the paper's inset window of updates."""
    if not text:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise FigureError(f"--window {text!r}: expected FIRST:LAST updates, e.g. 60000:70000") from None
    if not 1 <= a < b:
        raise FigureError(f"--window {text!r}: need 1 <= FIRST < LAST")
    return a, b


def write_png(run: runs.Run, path: Path, window: tuple[int, int] | None = None,
              max_points: int = 20000) -> int:
    """Draw the figure; returns the number of panels."""
    plt = _matplotlib()
    fig = figure(run, window, max_points)
    try:
        fig.savefig(path, dpi=130)
    finally:
        plt.close(fig)
    return len(fig.axes)


def figure(run: runs.Run, window: tuple[int, int] | None = None, max_points: int = 20000) -> Any:
    """The run's matplotlib figure (the caller saves and closes it)."""
    import numpy as np

    plt = _matplotlib()
    cols = run.columns(series.METRICS)
    if not cols or run.rows(series.METRICS) == 0:
        raise RunError(f"{run.id}: no metrics yet")
    m = run.read(series.METRICS)
    step = m[:, cols.index(series.STEP)]
    if window:
        keep = (step >= window[0]) & (step <= window[1])
        if not keep.any():
            raise FigureError(f"--window {window[0]}:{window[1]}: the run has updates "
                              f"{int(step[0])}..{int(step[-1])}")
        m, step = m[keep], step[keep]
    stride = max(1, len(step) // max_points)  # a figure never needs more points than pixels
    col = {c: m[::stride, i] for i, c in enumerate(cols)}
    x = step[::stride]
    C = series.classes_of(cols)
    F = m[:, cols.index(series.LOSS_DYNAMICAL)]
    dF = np.concatenate([[np.nan], F[:-1] - F[1:]])[::stride]

    d = run.read(series.DIAG) if run.rows(series.DIAG) else None
    dcols = run.columns(series.DIAG)
    if d is not None and window:
        d = d[(d[:, 0] >= window[0]) & (d[:, 0] <= window[1])]
    has = lambda name: d is not None and name in dcols and np.isfinite(d[:, dcols.index(name)]).any()  # noqa: E731

    panels = ["gamma", "F", "dF", "acc"] + [p for p in (series.HESSIAN_LAMBDA_MAX, series.NTK_LAMBDA_MAX)
                                             if has(p)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.7 * len(panels) + 0.6), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    markers = "os^vD<>ph*"
    for ax, p in zip(axes, panels):
        if p == "gamma":
            for i in range(C):
                ax.plot(x, col[series.gamma(i)], lw=0.8, label=f"Γ_{i}")
            ax.set_ylabel("Γ_i(t)")
            if C <= 10:
                ax.legend(loc="upper right", fontsize=6, ncol=min(C, 5))
        elif p == "F":
            ax.plot(x, col[series.LOSS_DYNAMICAL], lw=0.8, label="F")
            plain = series.plain_loss(list(col))
            ax.plot(x, col[plain], lw=0.8, alpha=0.7, label=series.LOSS_LABEL[plain])
            ax.set_yscale("log")
            ax.set_ylabel("loss")
            ax.legend(loc="upper right", fontsize=6)
        elif p == "dF":
            ax.plot(x, dF, lw=0.6)
            ax.set_ylabel("F(t−1)−F(t)")
            ax.set_yscale("symlog", linthresh=1e-6)
            ax.set_yticks([-1.0, -1e-3, 0.0, 1e-3, 1.0])
        elif p == "acc":
            ax.plot(x, col[series.ACCURACY], lw=0.9, color="k", label="train")
            if C <= 10:
                for i in range(C):
                    ax.plot(x, col[series.accuracy_class(i)], lw=0.5, alpha=0.6,
                            marker=markers[i % len(markers)], markevery=max(1, len(x) // 12),
                            ms=2.5, label=f"class {i}")
            if run.rows(series.EVAL):
                e = run.read(series.EVAL)
                ecols = run.columns(series.EVAL)
                if window:
                    e = e[(e[:, 0] >= window[0]) & (e[:, 0] <= window[1])]
                ax.plot(e[:, 0], e[:, ecols.index(series.VAL_ACCURACY)], lw=0.9, ls="--", label="held-out")
            ax.set_ylabel("accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(loc="lower right", fontsize=6, ncol=3)
        else:
            j = dcols.index(p)
            ok = np.isfinite(d[:, j])
            ax.plot(d[ok, 0], d[ok, j], ".-", lw=0.6, ms=2)
            ax.set_yscale("log")
            if p == series.HESSIAN_LAMBDA_MAX:
                stab = stability(_config(run))
                if stab.edge is not None and series.LR in dcols:
                    label = stab.edge.label + (f" ({stab.edge.note})" if stab.edge.note else "")
                    with np.errstate(divide="ignore"):
                        ax.plot(d[:, 0], stab.edge.factor / d[:, dcols.index(series.LR)], "r--", lw=0.8,
                                label=label)
                    ax.legend(loc="upper right", fontsize=6)
                elif stab.why_none:
                    ax.text(0.99, 0.95, stab.why_none, transform=ax.transAxes, ha="right", va="top",
                            fontsize=6, color="0.3")
            ax.set_ylabel("Hessian λmax" if p == series.HESSIAN_LAMBDA_MAX else "NTK λmax")
    axes[-1].set_xlabel("update")
    title = f"{run.id}"
    if window:
        title += f"  (updates {window[0]}–{window[1]})"
    axes[0].set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def _config(run: runs.Run) -> dict[str, Any]:
    try:
        return run.config_doc()
    except RunError:
        return {}


# ---------------------------------------------------------------------------
# Sweeps: ``dlf-tui export SWEEP --png FILE``
# ---------------------------------------------------------------------------

MAX_HEATMAPS = 12


def sweep_layout(sweep: sweeps.Sweep) -> tuple[int | None, int | None, list[tuple[tuple[int, Any], ...]]]:
    """(x axis index, y axis index, heatmaps): x is the sweep's first axis with more
    than one value, y its second (None when there are fewer); each heatmap is one
    combination of the values of the further multi-valued axes ((index, value), ...)."""
    multi = [i for i, a in enumerate(sweep.axes) if len(a.values) > 1]
    xi = multi[0] if multi else None
    yi = multi[1] if len(multi) > 1 else None
    rest = multi[2:]
    combos = [tuple(zip(rest, vals)) for vals in
              itertools.product(*(sweep.axes[i].values for i in rest))]
    return xi, yi, combos


def write_sweep_png(sweep: sweeps.Sweep, path: Path) -> int:
    """Heatmaps of the mean final accuracy per cell (annotated mean ± std and the
    fraction of seeds ≥ threshold, as k/n): train, and validation as a second panel when
    members have it; one row of panels per combination of the axes beyond the
    first two.  Returns the number of panels."""
    import numpy as np

    above, show = sweeps.above, sweeps.slug
    xi, yi, combos = sweep_layout(sweep)
    if len(combos) > MAX_HEATMAPS:
        raise FigureError(f"{sweep.id}: {len(combos)} combinations of the axes beyond the first two: "
                          f"at most {MAX_HEATMAPS} rows of heatmaps")
    rows = {r["cell"]: r for r in sweep.summary()}
    if not any(r["train"]["n"] for r in rows.values()):
        raise RunError(f"{sweep.id}: no member has metrics yet")
    plt = _matplotlib()
    from matplotlib.colors import Normalize

    kinds = ["train"] + (["val"] if any(r["val"] for r in rows.values()) else [])
    xs = sweep.axes[xi].values if xi is not None else (None,)
    ys = sweep.axes[yi].values if yi is not None else (None,)
    base = [a.values[0] for a in sweep.axes]

    def cell(x, y, combo) -> tuple:
        c = list(base)
        if xi is not None:
            c[xi] = x
        if yi is not None:
            c[yi] = y
        for i, v in combo:
            c[i] = v
        return tuple(c)

    pw, ph = max(3.2, 1.05 * len(xs) + 1.6), max(1.6, 0.62 * len(ys) + 1.3)
    fig, axes = plt.subplots(len(combos), len(kinds), squeeze=False, layout="constrained",
                             figsize=(pw * len(kinds) + 1.0, ph * len(combos) + 0.6))
    norm = Normalize(0.0, 1.0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # grey: a cell without data
    fs = max(5.0, min(9.0, 48.0 / max(len(xs), 1)))
    thr = sweep.threshold
    image = None
    for row, combo in enumerate(combos):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            mean = np.full((len(ys), len(xs)), np.nan)
            for j, y in enumerate(ys):
                for i, x in enumerate(xs):
                    r = rows.get(cell(x, y, combo))
                    s = r and r[kind]
                    text = "no data"
                    if s and s["n"]:
                        mean[j, i] = s["mean"]
                        text = f"{s['mean']:.3f} ± {s['std']:.3f}\n{above(s)} ≥ {thr:g}"
                    colour = "k" if np.isfinite(mean[j, i]) and mean[j, i] > 0.6 else "w"
                    if not np.isfinite(mean[j, i]):
                        colour = "0.3"
                    ax.text(i, j, text, ha="center", va="center", fontsize=fs, color=colour)
            image = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, norm=norm, aspect="auto",
                              origin="lower")
            ax.set_xticks(range(len(xs)), [show(x) for x in xs] if xi is not None else [""])
            ax.set_yticks(range(len(ys)), [show(y) for y in ys] if yi is not None else [""])
            if xi is not None:
                ax.set_xlabel(sweep.axes[xi].key, fontsize=8)
            if yi is not None:
                ax.set_ylabel(sweep.axes[yi].key, fontsize=8)
            title = "final train accuracy" if kind == "train" else "final validation accuracy"
            if combo:
                title += "\n" + " ".join(f"{sweep.axes[i].short}={show(v)}" for i, v in combo)
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="mean final accuracy", shrink=0.9)
    done = sum(r["finished"] for r in rows.values())
    title = (f"{sweep.id}\n{sweep.preset}: {len(sweep.seeds)} seed{'s' * (len(sweep.seeds) != 1)} "
             f"per cell, threshold {thr:g}")
    if done < len(sweep.members):
        title += f"  ({done}/{len(sweep.members)} members finished)"
    fig.suptitle(title, fontsize=9)
    try:
        fig.savefig(path, dpi=130)
    finally:
        plt.close(fig)
    return len(combos) * len(kinds)
