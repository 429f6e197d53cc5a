"""The names of a run's series and of their columns, spelled once.

A run directory holds three series (``store.run.SeriesWriter``): ``metrics``
(one row per update), ``eval`` (one row per held-out evaluation) and ``diag``
(one row per landscape diagnostic).  The engine writes these columns, the wire
carries them, the UI and the exporters read them by these names.
"""

from __future__ import annotations

METRICS, EVAL, DIAG = "metrics", "eval", "diag"
SERIES = (METRICS, EVAL, DIAG)

# metrics: one row per update
STEP = "step"
LOSS_DYNAMICAL = "loss_dynamical"  # F = mean Γ[y]·ℓ (ℓ = CE, or squared error for [loss] kind = "mse")
LOSS_CE = "loss_ce"  # the plain (unweighted) loss of a CE run ...
LOSS_MSE = "loss_mse"  # ... and of an MSE run: a run has one of the two
ACCURACY = "accuracy"
AMPLITUDE = "amplitude"  # in force for that update (1 in the static tail)
PERIOD = "period"
LR = "lr"
GRAD_NORM = "grad_norm"

# eval: one row per held-out evaluation
VAL_LOSS_CE = "val_loss_ce"
VAL_LOSS_MSE = "val_loss_mse"
VAL_ACCURACY = "val_accuracy"

# diag: one row per landscape diagnostic
HESSIAN_LAMBDA_MAX = "hessian_lambda_max"
NTK_LAMBDA_MAX = "ntk_lambda_max"
HESSIAN_ITERS = "hessian_iters"
SECONDS = "seconds"


def accuracy_class(i: int) -> str:
    return f"accuracy_class_{i}"


def gamma(i: int) -> str:
    return f"gamma_{i}"


def val_accuracy_class(i: int) -> str:
    return f"val_accuracy_class_{i}"


def hessian_top(i: int) -> str:
    return f"hessian_top_{i}"


PLAIN_LOSS = {"ce": LOSS_CE, "mse": LOSS_MSE}  # [loss] kind → its plain-loss column
VAL_PLAIN_LOSS = {"ce": VAL_LOSS_CE, "mse": VAL_LOSS_MSE}
LOSS_LABEL = {LOSS_CE: "CE", LOSS_MSE: "MSE", VAL_LOSS_CE: "CE", VAL_LOSS_MSE: "MSE"}


def plain_loss(columns: list[str], held_out: bool = False) -> str:
    """The plain-loss column of a metrics (or eval) table: ``loss_ce`` or ``loss_mse``
    (runs written before the MSE existed have ``loss_ce``)."""
    names = VAL_PLAIN_LOSS if held_out else PLAIN_LOSS
    return next((c for c in names.values() if c in columns), names["ce"])


def metric_columns(C: int, loss: str = "ce") -> list[str]:
    return ([STEP, LOSS_DYNAMICAL, PLAIN_LOSS[loss], ACCURACY]
            + [accuracy_class(i) for i in range(C)]
            + [gamma(i) for i in range(C)]
            + [AMPLITUDE, PERIOD, LR, GRAD_NORM])


def eval_columns(C: int, loss: str = "ce") -> list[str]:
    return [STEP, VAL_PLAIN_LOSS[loss], VAL_ACCURACY] + [val_accuracy_class(i) for i in range(C)]


def diag_columns(k: int) -> list[str]:
    """``k`` top Hessian eigenvalues are kept as columns when more than one is asked for."""
    return ([STEP, HESSIAN_LAMBDA_MAX, NTK_LAMBDA_MAX, LR, HESSIAN_ITERS, SECONDS]
            + ([hessian_top(i) for i in range(k)] if k > 1 else []))


def classes_of(metric_cols: list[str]) -> int:
    """How many classes a metrics table with these columns has."""
    return sum(1 for c in metric_cols if c.startswith("gamma_"))
