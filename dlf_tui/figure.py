"""The paper's Fig. 4 as a PNG: ``dlf-tui export RUN --png FILE``.

One column of panels against the update: Γ_i(t), F, F(t−1) − F(t), accuracy,
Hessian λ_max (with the 2/η line) and NTK λ_max — the last two only when the run
computed them.  matplotlib is an optional extra (``pip install 'dlf-tui[plot]'``).
No torch.
"""

from __future__ import annotations

from pathlib import Path

from . import runs


class FigureError(RuntimeError):
    """One line for the user."""


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
    import numpy as np

    plt = _matplotlib()
    cols = run.columns("metrics")
    if not cols or run.rows("metrics") == 0:
        raise runs.RunError(f"{run.id}: no metrics yet")
    m = run.read("metrics")
    step = m[:, cols.index("step")]
    if window:
        keep = (step >= window[0]) & (step <= window[1])
        if not keep.any():
            raise FigureError(f"--window {window[0]}:{window[1]}: the run has updates "
                              f"{int(step[0])}..{int(step[-1])}")
        m, step = m[keep], step[keep]
    stride = max(1, len(step) // max_points)  # a figure never needs more points than pixels
    col = {c: m[::stride, i] for i, c in enumerate(cols)}
    x = step[::stride]
    C = sum(c.startswith("gamma_") for c in cols)
    F = m[:, cols.index("loss_dynamical")]
    dF = np.concatenate([[np.nan], F[:-1] - F[1:]])[::stride]

    d = run.read("diag") if run.rows("diag") else None
    dcols = run.columns("diag")
    if d is not None and window:
        d = d[(d[:, 0] >= window[0]) & (d[:, 0] <= window[1])]
    has = lambda name: d is not None and name in dcols and np.isfinite(d[:, dcols.index(name)]).any()  # noqa: E731

    panels = ["gamma", "F", "dF", "acc"] + [p for p in ("hessian_lambda_max", "ntk_lambda_max") if has(p)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.7 * len(panels) + 0.6), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    markers = "os^vD<>ph*"
    for ax, p in zip(axes, panels):
        if p == "gamma":
            for i in range(C):
                ax.plot(x, col[f"gamma_{i}"], lw=0.8, label=f"Γ_{i}")
            ax.set_ylabel("Γ_i(t)")
            if C <= 10:
                ax.legend(loc="upper right", fontsize=6, ncol=min(C, 5))
        elif p == "F":
            ax.plot(x, col["loss_dynamical"], lw=0.8, label="F")
            ax.plot(x, col["loss_ce"], lw=0.8, alpha=0.7, label="CE")
            ax.set_yscale("log")
            ax.set_ylabel("loss")
            ax.legend(loc="upper right", fontsize=6)
        elif p == "dF":
            ax.plot(x, dF, lw=0.6)
            ax.set_ylabel("F(t−1)−F(t)")
            ax.set_yscale("symlog", linthresh=1e-6)
            ax.set_yticks([-1.0, -1e-3, 0.0, 1e-3, 1.0])
        elif p == "acc":
            ax.plot(x, col["accuracy"], lw=0.9, color="k", label="train")
            if C <= 10:
                for i in range(C):
                    ax.plot(x, col[f"accuracy_class_{i}"], lw=0.5, alpha=0.6,
                            marker=markers[i % len(markers)], markevery=max(1, len(x) // 12),
                            ms=2.5, label=f"class {i}")
            if run.rows("eval"):
                e = run.read("eval")
                ecols = run.columns("eval")
                if window:
                    e = e[(e[:, 0] >= window[0]) & (e[:, 0] <= window[1])]
                ax.plot(e[:, 0], e[:, ecols.index("val_accuracy")], lw=0.9, ls="--", label="held-out")
            ax.set_ylabel("accuracy")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(loc="lower right", fontsize=6, ncol=3)
        else:
            j = dcols.index(p)
            ok = np.isfinite(d[:, j])
            ax.plot(d[ok, 0], d[ok, j], ".-", lw=0.6, ms=2)
            ax.set_yscale("log")
            if p == "hessian_lambda_max" and "lr" in dcols:
                ax.plot(d[:, 0], 2.0 / d[:, dcols.index("lr")], "r--", lw=0.8, label="2/η")
                ax.legend(loc="upper right", fontsize=6)
            ax.set_ylabel("Hessian λmax" if p.startswith("hessian") else "NTK λmax")
    axes[-1].set_xlabel("update")
    title = f"{run.id}"
    if window:
        title += f"  (updates {window[0]}–{window[1]})"
    axes[0].set_title(title, fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=130)
    finally:
        plt.close(fig)
    return len(panels)
