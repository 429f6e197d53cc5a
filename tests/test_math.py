"""The science against the authors' reference (tests/data, copied from shared/reference), DESIGN §3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlf_tui.core import config
from dlf_tui.engine import data as datamod
from dlf_tui.engine import models
from dlf_tui.engine.steps import select as steppers
from dlf_tui.core.schedule import Schedule, gammas, raw_weights

CPU = torch.device("cpu")


def test_spiral_is_bit_for_bit_the_reference(reference):
    x, y = datamod.make_spiral(100, 3, 2.0, 0.2, 0)
    assert np.array_equal(x, np.array(reference["X"]))
    assert np.array_equal(y, np.array(reference["labels"]))
    xv, _ = datamod.make_spiral(100, 3, 2.0, 0.2, 1)
    assert not np.allclose(xv, x)  # the held-out spiral is another draw


@pytest.mark.parametrize("run,amp", [("A70", 70), ("A1", 1)])
def test_gamma_matches_reference_for_3000_steps(reference, run, amp):
    sch = Schedule.create("triangle", amp, 5000, 3, 70000, True)
    g, a, p = sch.table(3001)
    ref = np.array(reference["runs"][run]["gamma_after_step"])
    # reference step k (index k-1) records the Γ of the *next* update, k+1
    np.testing.assert_allclose(g[1:], ref, rtol=0, atol=1e-12)
    assert np.allclose(g.sum(1), 3.0)


def test_last_period_static_switch_matches_reference():
    sch = Schedule.create("triangle", 70, 5000, 3, 70000, True)
    g, a, _ = sch.table(70000)
    first_static = int(np.argmax(a == 1.0)) + 1  # 1-based update index
    assert first_static == 65014  # the reference switches after update 65,013
    assert (a == 1.0).sum() == 4987
    assert np.allclose(g[65013:], 1.0)
    off = Schedule.create("triangle", 70, 5000, 3, 70000, False)
    assert (off.table(70000)[1] == 70).all()


def test_emphasised_class_cycles_0_1_2_with_period_T_plus_1():
    sch = Schedule.create("triangle", 5, 4, 3, 100, False)
    g, _, _ = sch.table(15)
    emph = g.argmax(1)
    # t = 0 has Γ ≡ 1 (argmax 0); peaks at t = T/2 = 2 of each period of 5 updates
    assert list(emph[[2, 7, 12]]) == [0, 1, 2]
    assert np.allclose(g[[0, 4, 5, 9, 10]], 1.0)


def test_triangle_formula_at_hand_computed_points():
    # A = 70, T = 5000: s = 2·69/5000; t = 1000 → w = 1 + 1000·s = 28.6
    w = raw_weights("triangle", 70, 5000, np.array([0, 1000, 2500, 4000, 5000]))
    np.testing.assert_allclose(w, [1.0, 28.6, 70.0, 28.6, 1.0], rtol=1e-14)
    g = gammas(np.array([28.6]), 1, 3)[0]
    np.testing.assert_allclose(g, [3 / 30.6, 3 * 28.6 / 30.6, 3 / 30.6])


def test_other_shapes():
    t = np.array([0, 25, 50, 75, 100])
    np.testing.assert_allclose(raw_weights("sine", 11, 100, t), [1, 1 + 10 * np.sin(np.pi / 4), 11,
                                                                 1 + 10 * np.sin(np.pi * 0.75), 1])
    np.testing.assert_allclose(raw_weights("square", 11, 100, t), [11, 11, 11, 1, 1])
    np.testing.assert_allclose(raw_weights("static", 11, 100, t), 1)


def test_amplitude_edit_is_phase_continuous():
    sch = Schedule.create("triangle", 70, 5000, 3, 70000, False)
    sch.advance(1234)
    t, c = sch.s.t, sch.s.c
    sch.set_amplitude(30)
    assert (sch.s.t, sch.s.c) == (t, c) == (1234, 0)
    w = 1 + 1234 * 2 * 29 / 5000
    np.testing.assert_allclose(sch.gamma(), [3 * w / (w + 2), 3 / (w + 2), 3 / (w + 2)], rtol=1e-14)


@pytest.mark.parametrize("t,T,T2", [(1234, 5000, 2000), (4999, 5000, 10), (0, 5000, 7), (3, 4, 5000),
                                    (5000, 5000, 100)])
def test_period_edit_keeps_the_fraction_of_the_period(t, T, T2):
    sch = Schedule.create("triangle", 70, T, 3, 10**6, False)
    sch.advance(5 * (T + 1) + t)  # some periods in: emphasised class 5 mod 3 = 2
    assert sch.s.t == t and sch.s.c == 2
    sch.set_period(T2)
    expect_t = (t * (T2 + 1)) // (T + 1)  # ⌊t/(T+1)·(T'+1)⌋
    assert sch.s.t == expect_t and sch.s.c == 2 and sch.s.period == T2
    w = raw_weights("triangle", 70, T2, np.array([expect_t]))[0]
    np.testing.assert_allclose(sch.gamma()[2], 3 * w / (w + 2), rtol=1e-14)
    # and the period now lasts T2+1 updates: the class changes exactly at the boundary
    sch.advance(T2 - expect_t)
    assert sch.s.c == 2
    sch.advance(1)
    assert sch.s.c == 0 and sch.s.t == 0


def _reference_stepper(reference, kind, amplitude, dtype=torch.float64):
    cfg = config.apply_overrides(config.Config(), [f"schedule.amplitude={amplitude}",
                                                   f"run.fused={'true' if kind == 'fused' else 'false'}"])
    data = datamod.load(cfg.data, CPU, dtype)
    model = models.build(cfg.model, 2, 3, 0, CPU, dtype)
    models.load_reference_init(model, reference["init"])
    st = steppers.make(cfg, model, data, 1501)
    return st, data


def _run_rows(st, amplitude, n):
    sch = Schedule.create("triangle", amplitude, 5000, 3, 70000, True)
    g, _, _ = sch.table(n)
    st.begin_chunk(torch.as_tensor(g, dtype=st.dtype))
    for i in range(n):
        st.step(i)
    raw = st.buf[:n].double().numpy()
    nll = -raw[:, 0:3]
    N = raw[:, 6:9].sum(1)
    return (g * nll).sum(1) / N, nll.sum(1) / N, raw[:, 3:6].sum(1) / N


@pytest.mark.parametrize("kind", ["fused", "autograd"])
@pytest.mark.parametrize("run,amp", [("A70", 70), ("A1", 1)])
def test_trajectory_matches_reference_for_1500_updates(reference, kind, run, amp):
    st, _ = _reference_stepper(reference, kind, amp)
    F, CE, acc = _run_rows(st, amp, 1501)
    ref = reference["runs"][run]
    # our row k+1 is the forward pass after update k = reference index k-1
    np.testing.assert_allclose(CE[1:], ref["ce_after_step"][:1500], rtol=1e-9)
    np.testing.assert_allclose(F[1:], ref["F_after_step"][:1500], rtol=1e-9)
    np.testing.assert_allclose(acc[1:], ref["accuracy_after_step"][:1500], atol=1e-12)


def test_fused_and_autograd_paths_agree(reference):
    a, _ = _reference_stepper(reference, "fused", 70)
    b, _ = _reference_stepper(reference, "autograd", 70)
    ra = _run_rows(a, 70, 400)
    rb = _run_rows(b, 70, 400)
    for x, y in zip(ra, rb):
        np.testing.assert_allclose(x, y, rtol=1e-10)
    np.testing.assert_allclose(a.buf[:400, 9].numpy(), b.buf[:400, 9].numpy(), rtol=1e-9)  # ‖g‖
    pa = [p.detach() for p in a.model.parameters()]
    pb = [p.detach() for p in b.model.parameters()]
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_glorot_init_statistics():
    cfg = config.Config()
    model = models.build(cfg.model, 2, 3, 0, CPU, torch.float64)
    w = model.layers[0].weight.detach()
    std = (2 / (2 + 100)) ** 0.5
    assert w.abs().max() <= 2 * std / 0.87962566103423978 + 1e-12  # truncated at ±2σ
    assert abs(float(model.layers[0].bias.detach().std()) - 0.01) < 0.004
    other = models.build(cfg.model, 2, 3, 1, CPU, torch.float64)
    assert not torch.equal(other.layers[0].weight, model.layers[0].weight)
    same = models.build(cfg.model, 2, 3, 0, CPU, torch.float64)
    assert torch.equal(same.layers[0].weight, model.layers[0].weight)
