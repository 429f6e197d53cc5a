"""The dynamical MSE in the hand-written steps (``FusedMLPStep``, ``CKernelMLPStep``):
F = (1/N) Σ_n Γ[y_n]·‖f(x_n) − e_{y_n}‖² — against autograd on ``loss.dynamical_mse`` and
against numbers worked out by hand."""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace

import pytest
import torch

from dlf_tui.core import config
from dlf_tui.engine import models
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.loss import dynamical_mse, squared_error
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine.steps.fused import FusedMLPStep

CPU = torch.device("cpu")
needs_cc = pytest.mark.skipif(shutil.which(ckernel.CC) is None,
                              reason=f"no C compiler ({ckernel.CC!r}) on this machine")


def mse_config(hidden: tuple[int, ...], lr: float) -> config.Config:
    cfg = config.Config()
    return replace(cfg, model=replace(cfg.model, hidden=hidden), optim=replace(cfg.optim, lr=lr),
                   loss=replace(cfg.loss, kind="mse"))


@pytest.mark.parametrize("hidden", [(16,), (16, 12)])
def test_fused_mse_step_is_autograd_of_dynamical_mse(hidden):
    F, C, N, lr = 5, 4, 50, 0.1
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, F, generator=gen, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=gen)
    gam = torch.rand(1, C, generator=gen, dtype=torch.float64) * 3 + 0.2
    cfg = mse_config(hidden, lr)
    model = models.build(cfg.model, F, C, 0, CPU, torch.float64)
    ref = copy.deepcopy(model)  # before the step takes the parameters over
    st = FusedMLPStep(cfg, model, Dataset(Split(x, y), None, C, F), 4)
    assert st.loss == "mse"
    st.begin_chunk(gam)
    st.step(0)

    out = ref(x)
    loss = dynamical_mse(out, y, gam[0])
    params = [p for layer in ref.layers for p in (layer.weight, layer.bias)]
    grads = torch.autograd.grad(loss, params)
    got = [g for gw in st.gWa for g in (gw[:, :-1], gw[:, -1])]
    for g, want in zip(got, grads):
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-15)
    row = st.buf[0]
    onehot = torch.nn.functional.one_hot(y, C).to(torch.float64)
    torch.testing.assert_close(row[:C], -squared_error(out, y).detach() @ onehot, rtol=1e-12, atol=0)
    assert torch.equal(row[2 * C: 3 * C], onehot.sum(0))
    assert float(row[3 * C]) == pytest.approx(math.sqrt(sum(float((g * g).sum()) for g in grads)), rel=1e-12)
    # F from the row: Σ_c Γ_c·(Σ_{n∈c} ℓ_n) / N
    assert float(-(gam[0] * row[:C]).sum() / N) == pytest.approx(float(loss.detach()), rel=1e-12)
    # the update: the model's (shared) parameters moved by −lr·grad
    for p_new, p_old, g in zip((p for layer in st.model.layers for p in (layer.weight, layer.bias)),
                               params, grads):
        torch.testing.assert_close(p_new, p_old.detach() - lr * g, rtol=1e-12, atol=1e-15)


def _hand_stepper(kind: str):
    """2 inputs (the second always 0), one hidden unit, 3 classes (no sample of class 2),
    two samples: x = (1, 0) of class 0 and (−1, 0) of class 1; lr = 0.1."""
    cfg = mse_config((1,), 0.1)
    model = models.build(cfg.model, 2, 3, 0, CPU, torch.float64)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0.7]], dtype=torch.float64))
        model.layers[0].bias.zero_()
        model.layers[1].weight.copy_(torch.tensor([[2.0], [-1.0], [0.0]]))
        model.layers[1].bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    data = Dataset(Split(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64),
                         torch.tensor([0, 1])), None, 3, 2)
    if kind == "fused":
        return FusedMLPStep(cfg, model, data, 4)
    st = ckernel.CKernelMLPStep(cfg, model, data, 4, blocked=kind == "kernel-blocked")
    assert st.design == ("blocked" if kind == "kernel-blocked" else "small")
    return st


@pytest.mark.parametrize("kind", ["fused", pytest.param("kernel-small", marks=needs_cc),
                                  pytest.param("kernel-blocked", marks=needs_cc)])
def test_mse_step_by_hand(kind):
    """Hidden h = relu(x₀): 1 and 0.  Outputs f = (2h, −h + 0.5, 0): (2, −0.5, 0) and
    (0, 0.5, 0); errors f − e_y: (1, −0.5, 0) and (0, −0.5, 0); ℓ = 1.25 and 0.25.
    Γ = (2, 1, 5): F = (2·1.25 + 1·0.25)/2 = 1.375.  dF/df = (2Γ[y]/N)(f − e_y): (2, −1, 0)
    and (0, −0.5, 0); the second sample's hidden unit is off, so gW2 = (2, −1, 0)·h₁,
    gb2 = (2, −1.5, 0), and the hidden delta 2·2 + (−1)(−1) = 5 gives gW0 = (5, 0), gb0 = 5:
    ‖g‖² = 25 + 25 + 4 + 1 + 4 + 2.25 = 61.25."""
    st = _hand_stepper(kind)
    gam = torch.tensor([[2.0, 1.0, 5.0]], dtype=torch.float64)
    st.begin_chunk(gam)
    st.step(0)
    row = st.buf[0].tolist()
    assert row[:3] == [-1.25, -0.25, 0.0]  # Σ −ℓ per class
    assert row[3:9] == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]  # both right; one sample each of 0, 1
    assert row[9] == pytest.approx(math.sqrt(61.25), rel=1e-15)
    assert float(-(gam[0] * st.buf[0, :3]).sum() / 2) == 1.375
    W0a, W2a = (w.tolist() for w in st.gWa)
    assert W0a == [[5.0, 0.0, 5.0]]  # [gW0 | gb0]
    assert W2a == [[2.0, 2.0], [-1.0, -1.5], [0.0, 0.0]]  # [gW2 | gb2]
    # the update, P −= 0.1·G (on the model's own parameters)
    l0, l1 = st.model.layers
    torch.testing.assert_close(l0.weight, torch.tensor([[0.5, 0.7]], dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(l0.bias, torch.tensor([-0.5], dtype=torch.float64), rtol=1e-15, atol=0)
    torch.testing.assert_close(l1.weight, torch.tensor([[1.8], [-0.9], [0.0]], dtype=torch.float64),
                               rtol=1e-15, atol=0)
    torch.testing.assert_close(l1.bias, torch.tensor([-0.2, 0.65, 0.0], dtype=torch.float64),
                               rtol=1e-15, atol=0)
