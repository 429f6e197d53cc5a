"""Landscape diagnostics against dense linear algebra.

Every Lanczos value is checked against ``torch.linalg.eigvalsh`` of the dense
Hessian built independently with ``torch.func.hessian`` over the flattened
parameters; every NTK value against an explicitly built Σ_c J_c J_cᵀ with J
from ``torch.autograd.functional.jacobian``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dlf_tui.core import config
from dlf_tui.engine import data as datamod
from dlf_tui.engine.diagnostics.hessian import hessian_operator, hessian_top_eigs
from dlf_tui.engine.diagnostics.lanczos import lanczos
from dlf_tui.engine.diagnostics.landscape import Diagnostics
from dlf_tui.engine.diagnostics.ntk import ntk_matrix, ntk_top_eig, subset
from dlf_tui.engine import models
from dlf_tui.engine.steps import select as steppers
from dlf_tui.engine.steps.autograd import AutogradStep
from dlf_tui.engine.steps.fused import FusedMLPStep
from dlf_tui.core.schedule import Schedule

DT = torch.float64
CPU = torch.device("cpu")
EVERY = 25  # the paper's cadence, for the warm-started run

CHECKPOINTS = {1: (0, 1000, 3000), 70: (0, 2500, 4500)}


# -- helpers --------------------------------------------------------------------
def spiral():
    cfg = config.Config()
    data = datamod.load(cfg.data, CPU, DT)
    model = models.build(cfg.model, 2, 3, 0, CPU, DT)
    return cfg, data, model


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def model_at(theta: torch.Tensor) -> nn.Module:
    cfg = config.Config()
    model = models.build(cfg.model, 2, 3, 0, CPU, DT)
    with torch.no_grad():
        nn.utils.vector_to_parameters(theta, model.parameters())
    return model


def _unflatten(model: nn.Module, theta: torch.Tensor) -> dict:
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    return {n: t.view(p.shape) for (n, p), t in zip(named, torch.split(theta, sizes))}


def _buffers(model: nn.Module) -> dict:
    return {n: b.clone() for n, b in model.named_buffers()}  # batch norm: keep the real ones


def dense_hessian(model: nn.Module, x, y, gamma, vmap: bool = True) -> torch.Tensor:
    """∇²F over the flattened parameters by ``torch.func.hessian`` (independent of
    the diagnostics package); ``vmap=False``: by ``torch.autograd.functional.hessian``,
    one double backward per column (vmap mishandles a train-mode batch norm)."""
    theta = flat_params(model)
    gamma = torch.as_tensor(np.asarray(gamma), dtype=theta.dtype)

    def F(th):
        logits = functional_call(model, (_unflatten(model, th), _buffers(model)), (x,))
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
        return (gamma[y] * ce).mean()

    H = torch.func.hessian(F)(theta) if vmap else torch.autograd.functional.hessian(F, theta)
    assert torch.allclose(H, H.t(), rtol=0, atol=1e-12 * H.abs().max())
    return H


def dense_top(model, x, y, gamma, k=5) -> list[float]:
    return torch.linalg.eigvalsh(dense_hessian(model, x, y, gamma)).flip(0)[:k].tolist()


def explicit_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Σ_c J_c J_cᵀ with J (n, C, P) from torch.autograd.functional.jacobian."""
    theta = flat_params(model)
    J = torch.autograd.functional.jacobian(
        lambda th: functional_call(model, (_unflatten(model, th), _buffers(model)), (x,)), theta)
    return torch.einsum("icp,jcp->ij", J, J)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# -- one training trajectory per amplitude, shared by the tests ------------------
def _trajectory(A: int) -> dict:
    """Full-batch GD (lr 1, the fused stepper: the parameters become
    requires_grad=False views) with a warm-started Diagnostics every 25 updates,
    as the trainer would run it.  At each checkpoint: parameters, Γ, the dense
    spectrum, a cold Lanczos run (k = 3) and the warm-started result."""
    cfg, data, model = spiral()
    x, y = data.train.x, data.train.y
    sched = Schedule.create("triangle", A, 5000, 3, 70000, True)
    stepper = FusedMLPStep(cfg, model, data, EVERY)
    diag = Diagnostics(model, x, y, every=EVERY, iters=30, k=1)
    cold_diag = Diagnostics(model, x, y, every=EVERY, iters=30, k=1, warm_start=False)
    points, iters, cold_iters, lam = {}, [], [], []
    step = 0
    last = max(CHECKPOINTS[A])
    while True:
        gam, _, _ = sched.table(EVERY)
        g0 = gam[0]
        warm = diag.compute(torch.as_tensor(g0), step)
        iters.append(warm["hessian_iters"])
        lam.append(warm["hessian_lambda_max"])
        cold_iters.append(cold_diag.compute(g0, step)["hessian_iters"])
        if step in CHECKPOINTS[A]:
            cold, info = hessian_top_eigs(model, x, y, g0, iters=50, k=3)
            H = dense_hessian(model, x, y, g0)
            points[step] = dict(theta=flat_params(model), gamma=g0.copy(), warm=warm,
                                cold=cold, info=info, H=H,
                                dense=torch.linalg.eigvalsh(H).flip(0)[:5].tolist())
        if step >= last:
            break
        stepper.begin_chunk(torch.as_tensor(gam, dtype=DT))
        for i in range(EVERY):
            stepper.step(i)
        sched.advance(EVERY)
        step += EVERY
    return dict(A=A, points=points, iters=iters, cold_iters=cold_iters, lam=lam, x=x, y=y)


@pytest.fixture(scope="module")
def trajectories() -> dict[int, dict]:
    return {A: _trajectory(A) for A in sorted(CHECKPOINTS)}


# -- Hessian ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mlp", "autograd", "func"])
def test_hessian_vector_products_match_dense(method):
    _, data, model = spiral()
    x, y = data.train.x, data.train.y
    gamma = [2.6, 0.2, 0.2]
    H = dense_hessian(model, x, y, gamma)
    op = hessian_operator(model, x, y, method)
    assert op.method == method
    op.prepare(gamma)
    V = torch.randn(op.n, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    for j in range(3):
        hv = op(V[:, j]).clone()
        assert torch.allclose(hv, H @ V[:, j], rtol=0, atol=1e-12 * H.abs().max())


def test_lanczos_lambda_max_matches_dense_along_run(trajectories):
    for trajectory in trajectories.values():
        _check_lambda_max(trajectory)
    worst = {A: max(rel(p["cold"][0], p["dense"][0]) for p in t["points"].values())
             for A, t in trajectories.items()}
    top3 = {A: max(rel(p["cold"][i], p["dense"][i]) for p in t["points"].values() for i in range(3))
            for A, t in trajectories.items()}
    warm = {A: max(rel(p["warm"]["hessian_lambda_max"], p["dense"][0]) for p in t["points"].values())
            for A, t in trajectories.items()}
    print(f"\nmax relative error vs dense eigvalsh at steps {CHECKPOINTS}: λ_max (cold) {worst}, "
          f"top-3 {top3}, λ_max (warm every {EVERY}) {warm}")


def _check_lambda_max(trajectory):
    for step, p in trajectory["points"].items():
        d = p["dense"]
        assert p["info"].converged, (trajectory["A"], step, p["info"])
        e = rel(p["cold"][0], d[0])
        assert e < 1e-6, f"A={trajectory['A']} step {step}: lanczos {p['cold'][0]} dense {d[0]} rel {e:.1e}"


def test_lanczos_top3_matches_dense_spectrum(trajectories):
    for trajectory in trajectories.values():
        _check_top3(trajectory)


def _check_top3(trajectory):
    for step, p in trajectory["points"].items():
        assert len(p["cold"]) == 3
        assert p["cold"] == sorted(p["cold"], reverse=True)
        for i in range(3):
            assert rel(p["cold"][i], p["dense"][i]) < 1e-6, (trajectory["A"], step, i, p["cold"], p["dense"])
        # the error estimate is honest to within the test's tolerance
        for i in range(3):
            assert abs(p["cold"][i] - p["dense"][i]) <= max(10 * p["info"].err_est[i], 1e-9 * abs(p["dense"][0]))


def test_ritz_vectors_are_eigenvectors(trajectories):
    trajectory = trajectories[70]
    step = max(trajectory["points"])
    p = trajectory["points"][step]
    H = p["H"]
    U = p["info"].vectors
    assert U.shape == (H.shape[0], 3)
    assert torch.allclose(U.t() @ U, torch.eye(3, dtype=DT), atol=1e-10)
    lam = torch.tensor(p["cold"], dtype=DT)
    resid = torch.linalg.vector_norm(H @ U - U * lam, dim=0)
    assert (resid <= 1e-4 * abs(p["dense"][0])).all(), resid


def test_warm_started_diagnostics_converge_to_dense(trajectories):
    for trajectory in trajectories.values():
        _check_warm(trajectory)


def _check_warm(trajectory):
    for step, p in trajectory["points"].items():
        w = p["warm"]
        assert w["hessian_converged"], (trajectory["A"], step, w)
        assert rel(w["hessian_lambda_max"], p["dense"][0]) < 1e-6, (trajectory["A"], step, w, p["dense"][0])
    # the warm start saves products: fewer Lanczos steps per call than a cold
    # start with the same convergence test (A=70: ~3.5 vs ~6; A=1, whose top
    # direction swings every update at the edge of stability: ~7.4 vs ~9)
    warm = np.array(trajectory["iters"][1:])
    cold = np.array(trajectory["cold_iters"][1:])
    print(f"\nA={trajectory['A']}: Lanczos steps per call every {EVERY} updates: warm mean "
          f"{warm.mean():.2f} (max {warm.max()}), cold mean {cold.mean():.2f} (max {cold.max()})")
    assert warm.mean() < 0.9 * cold.mean(), (np.bincount(warm), np.bincount(cold))


def test_edge_of_stability_is_visible(trajectories):
    """The physics the chart shows: λ_max starts well below 2/η = 2 and
    crosses it later in both runs (plain CE at lr 1 sits at the edge of
    stability; at A = 70 the narrowing valley pushes it there).  Which updates
    exceed 2 depends on rounding (the dynamics is chaotic there), so only the
    crossing itself is asserted."""
    for A, trajectory in trajectories.items():
        lam = np.array(trajectory["lam"])
        assert lam[0] < 1.0 and lam.max() > 2.0, (A, lam[0], lam.max())


def test_reference_init_lambda_max_A1(reference):
    ref = reference
    _, data, model = spiral()
    models.load_reference_init(model, ref["init"])
    x = torch.tensor(ref["X"], dtype=DT)
    y = torch.tensor(ref["labels"], dtype=torch.int64)
    assert torch.allclose(x, data.train.x, atol=1e-12)
    gamma = [1.0, 1.0, 1.0]
    eigs, info = hessian_top_eigs(model, x, y, gamma, iters=50, k=3)
    dense = dense_top(model, x, y, gamma)
    print(f"\nreference init, A=1: Hessian top-3 {eigs} (dense {dense[:3]}), "
          f"{info.iters} Lanczos steps; NTK λ_max {ntk_top_eig(model, x):.10g}")
    assert info.converged
    for i in range(3):
        assert rel(eigs[i], dense[i]) < 1e-6


def test_hessian_of_a_generic_module_float32_and_no_grad():
    """Any nn.Module (autograd path), under torch.no_grad, and in float32."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).to(DT)
    _, data, _ = spiral()
    x, y = data.train.x, data.train.y
    gamma = [1.5, 0.75, 0.75]
    dense = dense_top(net, x, y, gamma)
    with torch.no_grad():
        eigs, info = hessian_top_eigs(net, x, y, gamma, iters=50, k=2)
    assert info.converged and rel(eigs[0], dense[0]) < 1e-6 and rel(eigs[1], dense[1]) < 1e-6
    net32 = net.to(torch.float32)
    eigs32, info32 = hessian_top_eigs(net32, x.float(), y, gamma, iters=50)
    assert info32.converged and rel(eigs32[0], dense[0]) < 1e-4


def test_deeper_mlp_hand_written_paths():
    """Two hidden layers: the R-operator's inner layers and the structured NTK's
    general branch (the spiral's single hidden layer never reaches them)."""
    torch.manual_seed(5)
    net = models.MLP(2, (12, 9), 3).to(DT)
    _, data, _ = spiral()
    x, y = data.train.x[::3], data.train.y[::3]
    gamma = [0.4, 2.2, 0.4]
    H = dense_hessian(net, x, y, gamma)
    op = hessian_operator(net, x, y, "mlp")
    op.prepare(gamma)
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert torch.allclose(op(v), H @ v, rtol=0, atol=1e-12 * H.abs().max())
    eigs, info = hessian_top_eigs(net, x, y, gamma, iters=60, k=2)
    dense = torch.linalg.eigvalsh(H).flip(0)[:2].tolist()
    assert info.converged and all(rel(a, b) < 1e-6 for a, b in zip(eigs, dense)), (eigs, dense)
    xs = x[:25]
    theta = explicit_ntk(net, xs)
    assert torch.allclose(ntk_matrix(net, xs), theta, rtol=0, atol=1e-12 * theta.abs().max())


def test_mlp_on_image_shaped_inputs():
    """MLP.forward flattens (N, C, H, W): the hand-written paths do too."""
    torch.manual_seed(6)
    net = models.MLP(16, (10,), 3).to(DT)
    x = torch.randn(30, 1, 4, 4, dtype=DT)
    y = torch.arange(30) % 3
    gamma = [1.0, 1.0, 1.0]
    eigs, info = hessian_top_eigs(net, x, y, gamma, iters=60, k=2)
    assert hessian_operator(net, x, y).method == "mlp"
    dense = dense_top(net, x, y, gamma)
    assert info.converged and rel(eigs[0], dense[0]) < 1e-6 and rel(eigs[1], dense[1]) < 1e-6
    theta = explicit_ntk(net, x)
    assert torch.allclose(ntk_matrix(net, x), theta, rtol=0, atol=1e-12 * theta.abs().max())


def test_batchnorm_model_generic_paths():
    """A train-mode batch norm couples the samples: the Hessian is the batch
    loss's, the NTK the batch function's, and the running statistics of the
    real module are never touched."""
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    net.train()
    _, data, _ = spiral()
    x, y = data.train.x[::5], data.train.y[::5]
    before = {n: b.clone() for n, b in net.named_buffers()}
    gamma = [0.5, 0.5, 2.0]
    diag = Diagnostics(net, x, y, every=1, ntk_every=1, ntk_size=20, k=2, iters=60)
    out = diag.compute(gamma, 0)
    eigs = out["hessian_top"]
    theta = ntk_matrix(net, diag.ntk_x, chunk=9)
    op = hessian_operator(net, x, y, "func")
    op.prepare(gamma)
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(3), dtype=DT)
    hv_func = op(v)
    for n, b in net.named_buffers():
        assert torch.equal(b, before[n]), n
    H = dense_hessian(net, x, y, gamma, vmap=False)
    dense = torch.linalg.eigvalsh(H).flip(0).tolist()
    assert out["hessian_converged"] and rel(eigs[0], dense[0]) < 1e-6 and rel(eigs[1], dense[1]) < 1e-6
    assert torch.allclose(hv_func, H @ v, rtol=0, atol=1e-12 * H.abs().max())
    explicit = explicit_ntk(net, diag.ntk_x)
    assert torch.allclose(theta, explicit, rtol=0, atol=1e-12 * explicit.abs().max())
    assert rel(out["ntk_lambda_max"], torch.linalg.eigvalsh(explicit)[-1].item()) < 1e-8


# -- Lanczos itself ---------------------------------------------------------------
def test_lanczos_on_known_spectra():
    g = torch.Generator().manual_seed(0)
    Qm, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=DT))
    lam = torch.linspace(-3, 5, 80, dtype=DT)
    A = Qm @ torch.diag(lam) @ Qm.t()
    v0 = torch.randn(80, generator=g, dtype=DT)
    eigs, info = lanczos(lambda v: A @ v, v0, iters=80, k=2, tol=1e-10)
    assert info.converged and abs(eigs[0] - 5) < 1e-9 and abs(eigs[1] - lam[-2].item()) < 1e-9
    # an invariant Krylov space (rank 2): stops at once with the exact values
    B = Qm[:, :2] @ torch.diag(torch.tensor([4.0, 1.0], dtype=DT)) @ Qm[:, :2].t()
    eigs, info = lanczos(lambda v: B @ v, v0, iters=40, k=2, tol=1e-12)
    assert info.breakdown and info.converged and info.iters <= 3
    assert abs(eigs[0] - 4) < 1e-12 and abs(eigs[1] - 1) < 1e-12
    # out of iterations: reported, not hidden
    _, info = lanczos(lambda v: A @ v, v0, iters=3, k=1, tol=1e-12)
    assert not info.converged and info.iters == 3
    with pytest.raises(ValueError):
        lanczos(lambda v: A @ v, torch.zeros(80, dtype=DT), iters=5)


# -- NTK -------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["init", "trained"])
def test_ntk_matches_explicit_jjt(where, trajectories):
    trajectory = trajectories[70]
    if where == "init":
        _, _, model = spiral()
    else:
        model = model_at(trajectory["points"][4500]["theta"])
    xs = subset(trajectory["x"], 60)
    assert xs.shape == (60, 2)
    theta = explicit_ntk(model, xs)
    lam = torch.linalg.eigvalsh(theta)[-1].item()
    for method in ("mlp", "jacobian"):
        K = ntk_matrix(model, xs, method=method, chunk=16)
        assert torch.allclose(K, theta, rtol=0, atol=1e-12 * theta.abs().max()), method
        for solver in ("eigvalsh", "lanczos", "auto"):
            got = ntk_top_eig(model, xs, method=method, solver=solver, chunk=16)
            assert rel(got, lam) < 1e-8, (method, solver, got, lam)
    mean = ntk_top_eig(model, xs, reduction="mean")
    assert rel(mean, lam / 3) < 1e-12


def test_ntk_of_a_generic_module():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    xs = torch.randn(20, 2, dtype=DT)
    lam = torch.linalg.eigvalsh(explicit_ntk(net, xs))[-1].item()
    assert rel(ntk_top_eig(net, xs, chunk=7), lam) < 1e-8
    with pytest.raises(ValueError, match="Jacobian"):  # 20·3·83 doubles > 10 kB
        ntk_matrix(net, xs, max_bytes=1e4)


# -- the trainer's helper ---------------------------------------------------------
def _snapshot(model):
    return [(p.detach().clone(), None if p.grad is None else p.grad.clone(), p.requires_grad)
            for p in model.parameters()]


def _same(model, snap) -> bool:
    for p, (v, g, rg) in zip(model.parameters(), snap):
        if not torch.equal(p.detach(), v) or p.requires_grad != rg:
            return False
        if (g is None) != (p.grad is None) or (g is not None and not torch.equal(g, p.grad)):
            return False
    return True


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "autograd"])
def test_compute_is_side_effect_free(fused):
    cfg, data, model = spiral()
    cfg = config.Config(run=config.RunConfig(fused=fused))
    stepper = steppers.make(cfg, model, data, 10)
    assert isinstance(stepper, FusedMLPStep if fused else AutogradStep)
    stepper.begin_chunk(torch.ones(10, 3, dtype=DT))
    for i in range(10):
        stepper.step(i)
    diag = Diagnostics(model, data.train.x, data.train.y, every=5, ntk_every=10, ntk_size=50)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    snap = _snapshot(model)
    for step in (0, 5, 10):
        out = diag.compute([2.0, 0.5, 0.5], step)
        assert math.isfinite(out["hessian_lambda_max"]) and out["hessian_converged"]
    assert math.isfinite(out["ntk_lambda_max"])
    assert _same(model, snap), "parameters, grads or requires_grad changed"
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was used"


def test_diagnostics_built_before_the_stepper_follow_it():
    """The fused stepper replaces the parameters by views of its buffer after
    Diagnostics cached them: the next call must see the new, trained ones."""
    cfg, data, model = spiral()
    x, y = data.train.x, data.train.y
    diag = Diagnostics(model, x, y, every=1, iters=40)
    at_init = diag.compute([1, 1, 1], 0)["hessian_lambda_max"]
    stepper = FusedMLPStep(cfg, model, data, 50)
    stepper.begin_chunk(torch.ones(50, 3, dtype=DT))
    for i in range(50):
        stepper.step(i)
    now = diag.compute([1, 1, 1], 1)["hessian_lambda_max"]
    fresh, _ = hessian_top_eigs(model_at(flat_params(model)), x, y, [1, 1, 1], iters=40)
    assert rel(now, fresh[0]) < 1e-6 and rel(now, at_init) > 1e-3, (at_init, now, fresh)


def test_training_with_diagnostics_is_bit_identical():
    """Interleaving Diagnostics with the fused stepper changes nothing."""
    finals = []
    for with_diag in (False, True):
        cfg, data, model = spiral()
        stepper = FusedMLPStep(cfg, model, data, EVERY)
        diag = Diagnostics(model, data.train.x, data.train.y, every=EVERY, ntk_every=100)
        sched = Schedule.create("triangle", 70, 5000, 3, 70000, True)
        torch.manual_seed(7)
        for chunk in range(12):
            gam, _, _ = sched.table(EVERY)
            if with_diag:
                diag.compute(gam[0], chunk * EVERY)
            stepper.begin_chunk(torch.as_tensor(gam, dtype=DT))
            for i in range(EVERY):
                stepper.step(i)
            sched.advance(EVERY)
        finals.append((stepper.P.clone(), torch.get_rng_state()))
    assert torch.equal(finals[0][0], finals[1][0])
    assert torch.equal(finals[0][1], finals[1][1])


def test_due_options_and_nan():
    _, data, model = spiral()
    diag = Diagnostics(model, data.train.x, data.train.y, every=25, ntk_every=100, ntk_size=30)
    assert diag.ntk_x.shape == (30, 2)
    assert [s for s in range(0, 201, 25) if diag.due(s)] == list(range(0, 201, 25))
    assert diag.hessian_due(50) and not diag.ntk_due(50) and diag.ntk_due(200)
    out = diag.compute([1, 1, 1], 50)
    assert math.isfinite(out["hessian_lambda_max"]) and math.isnan(out["ntk_lambda_max"])
    out = diag.compute([1, 1, 1], 7)
    assert math.isnan(out["hessian_lambda_max"]) and out["hessian_top"] == []
    out = diag.compute([1, 1, 1], 7, force=True)
    assert math.isfinite(out["hessian_lambda_max"]) and math.isfinite(out["ntk_lambda_max"])
    diag.configure(every=0, ntk_size=40)
    assert not diag.due(50) and diag.ntk_due(100) and diag.ntk_x.shape == (40, 2)
    diag.configure(k=3, every=10)
    out = diag.compute([1, 1, 1], 10)
    assert len(out["hessian_top"]) == 3
    diag.configure(enabled=False)
    assert not diag.due(0)
    for bad in ({"every": -1}, {"iters": 0}, {"k": 99}, {"nope": 1}, {"ntk_solver": "x"}):
        with pytest.raises(ValueError):
            diag.configure(**bad)
    assert diag.options()["every"] == 10  # a rejected change changes nothing
