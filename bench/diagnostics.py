"""Cost of the landscape diagnostics on the spiral (float64, one thread).

    .venv/bin/python bench/diagnostics.py [--rate 8000] [--steps 5000] [--repeats 3] [--device cpu]

Prints (no asserts):
1. the fused training rate measured here (updates/s);
2. one Hessian λ_max with a fixed number of Lanczos steps (10 = the paper's,
   20), cold start, per Hessian-vector-product implementation;
3. one NTK λ_max on 100 and 300 points (structured MLP path and generic
   Jacobian path; eigvalsh and Lanczos solvers);
4. the implied overhead at a cadence, overhead = t_call · rate / every, with
   ``--rate`` (the nominal training rate) and with the rate measured here;
5. the real thing: training interleaved with Diagnostics (adaptive Lanczos,
   warm or cold start) on the spiral-fig4 schedule (A = 70) and on plain CE
   (A = 1), wall-clock against training alone, with both rates.

Timings are the best of ``--repeats`` (the machine may be shared).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from dlf_tui.core import config
from dlf_tui.engine import data as datamod
from dlf_tui.engine.diagnostics.hessian import hessian_operator, hessian_top_eigs
from dlf_tui.engine.diagnostics.landscape import Diagnostics
from dlf_tui.engine.diagnostics.ntk import ntk_top_eig, subset
from dlf_tui.engine import models
from dlf_tui.engine.steps.fused import FusedMLPStep
from dlf_tui.core.schedule import Schedule

DT = torch.float64
DEV = torch.device("cpu")


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)


def setup(A: float, chunk: int):
    cfg = config.Config()
    data = datamod.load(cfg.data, DEV, DT)
    model = models.build(cfg.model, 2, 3, 0, DEV, DT)
    stepper = FusedMLPStep(cfg, model, data, chunk)
    sched = Schedule.create("triangle", A, 5000, 3, 70000, True)
    return cfg, data, model, stepper, sched


def best_of(fn, repeats: int, number: int) -> float:
    """Seconds per call: the best of ``repeats`` means over ``number`` calls."""
    fn()
    best = math.inf
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def train(steps: int, A: float, every: int, diag_kw: dict | None) -> tuple[float, dict]:
    """Wall time of ``steps`` updates (chunks of ``every``), with Diagnostics every
    ``every`` updates if ``diag_kw`` is given; and the Lanczos-step stats."""
    _, data, model, stepper, sched = setup(A, every)
    diag = Diagnostics(model, data.train.x, data.train.y, every=every, **diag_kw) if diag_kw else None
    iters, lam = [], []
    sync()
    t0 = time.perf_counter()
    for c in range(steps // every):
        gam, _, _ = sched.table(every)
        if diag is not None:
            r = diag.compute(gam[0], c * every)
            iters.append(r["hessian_iters"])
            lam.append(r["hessian_lambda_max"])
        stepper.begin_chunk(torch.as_tensor(gam, dtype=DT, device=DEV))
        for i in range(every):
            stepper.step(i)
        sched.advance(every)
    sync()
    el = time.perf_counter() - t0
    stats = {}
    if iters:
        stats = dict(iters_mean=statistics.fmean(iters[1:] or iters), iters_max=max(iters),
                     lam_max=max(lam), calls=len(iters))
    return el, stats


def train_best(steps: int, A: float, every: int, variants: dict, repeats: int) -> dict:
    """Best-of-``repeats`` wall times, the variants interleaved within each repeat
    (so that a shared machine's load hits them alike)."""
    best = {name: (math.inf, {}) for name in variants}
    for _ in range(repeats):
        for name, kw in variants.items():
            t, st = train(steps, A, every, kw)
            if t < best[name][0]:
                best[name] = (t, st)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=8000.0, help="nominal training rate, updates/s")
    ap.add_argument("--steps", type=int, default=5000, help="updates per interleaved run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--every", type=int, nargs="+", default=[25, 50, 100, 250])
    ap.add_argument("--device", default="cpu", help="cpu (the spec'd bench) or cuda")
    ap.add_argument("--skip-slow", action="store_true", help="skip the autograd/func HVP rows")
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    torch.set_num_threads(1)
    R = args.rate

    # 1. training alone -------------------------------------------------------
    t_train = train_best(args.steps, 70, 25, {"train": None}, args.repeats)["train"][0]
    measured = args.steps / t_train
    print(f"training (fused, spiral, float64, {DEV.type}, 1 thread, chunks of 25): {measured:,.0f} updates/s "
          f"measured here; nominal --rate {R:,.0f}/s")

    # 2. one Hessian λ_max ----------------------------------------------------
    cfg, data, model, stepper, sched = setup(70, 25)
    x, y = data.train.x, data.train.y
    stepper.begin_chunk(torch.as_tensor(sched.table(25)[0], dtype=DT, device=DEV))
    for _ in range(40):  # move off the initial point
        for i in range(25):
            stepper.step(i)
    gam = [2.0, 0.5, 0.5]
    print("\none Hessian λ_max (cold start, fixed Lanczos steps; ms per call):")
    cost = {}
    for method in ("mlp",) if args.skip_slow else ("mlp", "autograd", "func"):
        op = hessian_operator(model, x, y, method)
        op.prepare(gam)
        v = torch.randn(op.n, dtype=DT, generator=torch.Generator().manual_seed(0)).to(DEV)
        reps = 1 if method == "func" else args.repeats
        t_hvp = best_of(lambda: op(v), reps, 10 if method == "func" else 100)
        t_prep = best_of(lambda: op.prepare(gam), reps, 10 if method == "func" else 100)
        row = [f"  {method:8s} prepare {t_prep * 1e3:6.3f}  one HVP {t_hvp * 1e3:6.3f}"]
        for it in (10, 20):
            if method == "func" and it == 20:
                continue
            t = best_of(lambda: hessian_top_eigs(model, x, y, gam, iters=it, min_iters=it, tol=1e-300,
                                                    method=method), reps, 3 if method == "func" else 20)
            cost[(method, it)] = t
            row.append(f"iters {it}: {t * 1e3:7.3f}")
        print("  ".join(row))
    print(f"  one fused training update: {1e3 / measured:.3f} ms here, {1e3 / R:.3f} ms at --rate")

    # 3. one NTK λ_max --------------------------------------------------------
    print("\none NTK λ_max (ms per call):")
    ntk_cost = {}
    for n in (100, 300):
        xs = subset(x, n)
        cells = []
        for method in ("mlp", "jacobian"):
            for solver in ("eigvalsh", "lanczos"):
                t = best_of(lambda: ntk_top_eig(model, xs, method=method, solver=solver),
                            args.repeats, 3 if method == "jacobian" else 10)
                ntk_cost[(n, method, solver)] = t
                cells.append(f"{method}/{solver} {t * 1e3:7.2f}")
        print(f"  n={n:3d}: " + "  ".join(cells))

    # 4. implied overhead -----------------------------------------------------
    print("\nimplied overhead = t_call · rate / every (fixed steps, cold; mlp HVP):")
    for it in (10, 20):
        t = cost[("mlp", it)]
        cells = [f"every {e}: {t * R / e:6.1%} ({t * measured / e:6.1%})" for e in args.every]
        print(f"  Hessian iters {it}: " + "  ".join(cells) + "   [at --rate (at measured rate)]")
    for n in (100, 300):
        t = ntk_cost[(n, "mlp", "lanczos")]
        cells = [f"every {e}: {t * R / e:6.1%}" for e in (100, 250, 1000)]
        print(f"  NTK n={n} (mlp/lanczos): " + "  ".join(cells) + "   [at --rate]")

    # 5. interleaved training -------------------------------------------------
    print(f"\ninterleaved: {args.steps} updates with Diagnostics every E updates "
          "(wall-clock overhead vs training alone, at the rate measured here):")
    variants = {
        "training alone": None,
        "paper: 10 fixed steps, cold": dict(iters=10, min_iters=10, tol=1e-300, warm_start=False),
        "adaptive tol 1e-7, cold": dict(iters=30, warm_start=False),
        "adaptive tol 1e-7, warm (default)": dict(iters=30),
        "adaptive tol 1e-5, warm": dict(iters=30, tol=1e-5),
    }
    for A in (70, 1):
        for every in args.every:
            best = train_best(args.steps, A, every, variants, args.repeats)
            t0 = best["training alone"][0]
            print(f"  A={A:2d} every {every:3d}: training alone {args.steps / t0:6,.0f} updates/s")
            for name, (t1, st) in best.items():
                if st == {}:
                    continue
                over = t1 / t0 - 1
                per_call = (t1 - t0) / max(st["calls"], 1)
                nominal = per_call * R / every  # the same per-call cost at the nominal rate
                print(f"      {name:34s} overhead {over:6.1%} (at --rate {nominal:6.1%})  "
                      f"-> {args.steps / t1:6,.0f} updates/s  {per_call * 1e3:6.3f} ms/call  "
                      f"Lanczos steps/call {st['iters_mean']:4.1f} (max {st['iters_max']})  "
                      f"max λ {st['lam_max']:.3f}")


if __name__ == "__main__":
    main()
