"""The C kernel step computes the same function as ``FusedMLPStep`` (and the reference):
both of its designs (small, blocked), both losses (ce, mse), the spiral and MNIST-1D-sized
random data."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf_tui.core import config
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine import models
from dlf_tui.engine import data as datamod
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine.data import Dataset, Split
from dlf_tui.engine.loss import log_p_target, squared_error
from dlf_tui.engine.steps.fused import FusedMLPStep

CPU = torch.device("cpu")

needs_cc = pytest.mark.skipif(shutil.which(ckernel.CC) is None,
                              reason=f"no C compiler ({ckernel.CC!r}) on this machine")


def make(cls, reference: dict, dtype: torch.dtype, chunk_rows: int = 512, loss: str = "ce", **kw):
    cfg = config.Config()
    cfg = replace(cfg, loss=replace(cfg.loss, kind=loss))
    data = datamod.load(cfg.data, CPU, dtype)
    model = models.build(cfg.model, 2, 3, 0, CPU, dtype)
    models.load_reference_init(model, reference["init"])
    return cls(cfg, model, data, chunk_rows, **kw)


def pair(reference: dict, dtype: torch.dtype, loss: str = "ce",
         blocked: bool | None = None) -> tuple[FusedMLPStep, ckernel.CKernelMLPStep]:
    """The fused step and the kernel step (``blocked``: forced to one design) on the spiral."""
    return (make(FusedMLPStep, reference, dtype, loss=loss),
            make(ckernel.CKernelMLPStep, reference, dtype, loss=loss, blocked=blocked))


def random_pair(features: int, classes: int, hidden: int, n: int, loss: str, dtype: torch.dtype,
                blocked: bool | None = None, lr: float = 0.05, chunk_rows: int = 128):
    """The fused step and the kernel step on the same random data (MNIST-1D-like: Gaussian
    inputs, random labels) from the same Glorot initialisation."""
    gen = torch.Generator().manual_seed(features * 1000 + classes)
    x = torch.randn(n, features, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    cfg = config.Config()
    cfg = replace(cfg, model=replace(cfg.model, hidden=(hidden,)), optim=replace(cfg.optim, lr=lr),
                  loss=replace(cfg.loss, kind=loss))
    out = []
    for cls, kw in ((FusedMLPStep, {}), (ckernel.CKernelMLPStep, {"blocked": blocked})):
        data = Dataset(Split(x, y), None, classes, features)
        model = models.build(cfg.model, features, classes, 0, CPU, dtype)
        out.append(cls(cfg, model, data, chunk_rows, **kw))
    return tuple(out)


def run_random_gamma(steppers: list, total: int, seed: int = 0) -> list[torch.Tensor]:
    """``total`` updates of each stepper, each update with its own random Γ (mean 1); the
    stats rows of each."""
    C = steppers[0].C
    gen = torch.Generator().manual_seed(seed)
    gam = torch.rand(total, C, generator=gen, dtype=torch.float64) * 4 + 0.1
    gam *= C / gam.sum(1, keepdim=True)
    rows: list[list[torch.Tensor]] = [[] for _ in steppers]
    done = 0
    while done < total:
        k = min(steppers[0].K - 7, total - done)  # odd chunk sizes, as in run()
        for st, out in zip(steppers, rows):
            st.begin_chunk(gam[done: done + k].to(st.dtype))
            for i in range(k):
                st.step(i)
            out.append(st.buf[:k].clone())
        done += k
    return [torch.cat(r) for r in rows]


def run(steppers: list, total: int, amplitude: float = 70.0) -> list[torch.Tensor]:
    """``total`` updates of each stepper on the paper's schedule; the stats rows of each."""
    sched = Schedule.create("triangle", amplitude, 5000, 3, 70000, True)
    rows: list[list[torch.Tensor]] = [[] for _ in steppers]
    done = 0
    while done < total:
        k = min(steppers[0].K - 13, total - done)  # odd chunk sizes: rows are reused across chunks
        gam = sched.table(k)[0]
        sched.advance(k)
        for st, out in zip(steppers, rows):
            st.begin_chunk(torch.as_tensor(gam, dtype=st.dtype))
            for i in range(k):
                st.step(i)
            out.append(st.buf[:k].clone())
        done += k
    return [torch.cat(r) for r in rows]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a−b| relative to max(|a|, |b|) elementwise (exact zeros count as equal)."""
    d = (a - b).abs()
    scale = torch.maximum(a.abs(), b.abs())
    return float(torch.where(d == 0, torch.zeros_like(d), d / scale).max())


# the spiral under mse wants a smaller step than the paper's lr = 1 (it diverges there)
MSE_LR = 0.2


@needs_cc
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_float64_matches_fused_step(reference, loss):
    fused, kern = pair(reference, torch.float64, loss)
    assert kern.design == "small"  # 300 samples, 2 inputs, 3 classes
    if loss == "mse":
        for st in (fused, kern):
            st.set_lr(MSE_LR)
    a, b = run([fused, kern], 2000)
    assert a.shape == (2000, 10)
    assert torch.equal(a[:, 3:9], b[:, 3:9])  # correct / count per class: integers
    assert rel_err(a, b) < 1e-10
    assert (fused.P - kern.P).abs().max() < 1e-10 * fused.P.abs().max()
    # the model's modules see the kernel's parameters
    tr = kern.data.train
    assert torch.allclose(kern.eval_stats(tr), fused.eval_stats(tr), rtol=1e-10, atol=0)


@needs_cc
def test_float32_matches_fused_step(reference):
    fused, kern = pair(reference, torch.float32)
    # free runs: float32 trajectories part after ~7 updates here (a rounding difference
    # flips a ReLU mask and the dynamics amplify it), so compare only the first 6 freely
    a, b = run([fused, kern], 6)
    assert kern.P.dtype == torch.float32 and b.dtype == torch.float32
    assert torch.equal(a[:, 3:9], b[:, 3:9])
    assert rel_err(a, b) < 1e-5
    assert (fused.P - kern.P).abs().max() < 1e-5 * fused.P.abs().max()
    # then 300 more updates, each from the same parameters: the same function every step
    gam = Schedule.create("triangle", 70.0, 5000, 3, 70000, True).table(300)[0]
    for st in (fused, kern):
        st.begin_chunk(torch.as_tensor(gam, dtype=torch.float32))
    for i in range(300):
        fused.P.copy_(kern.P)
        fused.step(i)
        kern.step(i)
        assert (fused.G - kern.G).abs().max() < 1e-3 * fused.G.abs().max()  # seen: 6e-5
    a, b = fused.buf[:300], kern.buf[:300]
    assert rel_err(a[:, 0:3], b[:, 0:3]) < 1e-5 and rel_err(a[:, 9], b[:, 9]) < 1e-4
    assert (a[:, 3:6] - b[:, 3:6]).abs().max() <= 1  # a float32 near-tie may flip one sample


@needs_cc
def test_loss_trajectory_matches_reference(reference):
    kern = make(ckernel.CKernelMLPStep, reference, torch.float64)
    (rows,) = run([kern], 1501)
    N = kern.N
    # row k describes the network after k updates; the reference's index k-1 too
    ce = (-rows[1:, 0:3].sum(1) / N).numpy()
    acc = (rows[1:, 3:6].sum(1) / N).numpy()
    want = np.asarray(reference["runs"]["A70"]["ce_after_step"][:1500])
    np.testing.assert_allclose(ce, want, rtol=1e-9, atol=0)
    np.testing.assert_allclose(acc, reference["runs"]["A70"]["accuracy_after_step"][:1500], atol=0.5 / N)


@needs_cc
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("design", ["small", "blocked"])
@pytest.mark.parametrize("where", ["hidden", "output"])
def test_nan_propagates_like_fused_step(reference, loss, design, where):
    """A NaN first-layer weight (every output NaN), or a NaN weight of the last class's
    output (only that class NaN: the max of the outputs is NaN, so no sample is correct)."""
    if design == "small":
        fused, kern = pair(reference, torch.float64, loss)
        steps = run
    else:
        fused, kern = random_pair(40, 10, 50, 999, loss, torch.float64)
        steps = run_random_gamma
    assert kern.design == design
    C = fused.C
    i = 5 if where == "hidden" else fused.P.numel() - 2  # W2[C-1][H-1]
    for st in (fused, kern):
        st.P[i] = float("nan")
    a, b = steps([fused, kern], 3)
    assert (b[0, C: 2 * C] == 0).all()  # nobody is correct when an output is NaN
    torch.testing.assert_close(a, b, rtol=1e-10, atol=0, equal_nan=True)
    torch.testing.assert_close(fused.P, kern.P, rtol=1e-10, atol=0, equal_nan=True)
    assert torch.isnan(b[:, -1]).all() and torch.isnan(kern.P).all()  # ‖g‖


@needs_cc
def test_set_lr_reaches_kernel(reference):
    fused, kern = pair(reference, torch.float64)
    for st in (fused, kern):
        st.set_lr(0.25)
    run([fused, kern], 50)
    assert kern.lr == 0.25
    assert (fused.P - kern.P).abs().max() < 1e-12 * fused.P.abs().max()


@needs_cc
@pytest.mark.parametrize("which", range(len(ckernel.FLAG_SETS)))
def test_every_flag_set_computes_the_same(reference, which, tmp_path, monkeypatch):
    """Each fallback build (no libmvec, no -march=native) is correct too; a refused flag set
    (here a bogus -march) falls through to the next."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ckernel, "_loaded", {})
    bogus = (["-O3", "-march=no-such-cpu"], ["-lm"])
    monkeypatch.setattr(ckernel, "FLAG_SETS", (bogus, ckernel.FLAG_SETS[which]))
    status = ckernel.load_kernel()
    if status.lib is None:
        if which == 0:  # optional: libmvec is glibc-only
            pytest.skip(f"libmvec build unavailable here: {status.reason}")
        pytest.fail(status.reason)
    fused, kern = pair(reference, torch.float64)
    assert status.flags.startswith(" ".join(ckernel.FLAG_SETS[1][0]))
    a, b = run([fused, kern], 300)
    assert rel_err(a, b) < 1e-10
    assert (fused.P - kern.P).abs().max() < 1e-10 * fused.P.abs().max()
    # the same build's blocked design (more samples than the small one keeps in cache)
    fused, kern = random_pair(2, 3, 100, 1500, "mse", torch.float64)
    assert kern.design == "blocked"
    a, b = run_random_gamma([fused, kern], 20)
    assert rel_err(a, b) < 1e-10
    assert (fused.P - kern.P).abs().max() < 1e-10 * fused.P.abs().max()


# (features, classes, hidden, samples): MNIST-1D's 40 inputs and 10 classes; 64 inputs
# and 33 classes (five class vectors in float64); the spiral's 2 inputs and 3 classes with
# more samples than the small design keeps in cache.  The hidden widths leave 1, 2 and 3
# vectors after the tiles of 4 (float64 and float32), the sample counts a partial block.
SHAPES = [(40, 10, 50, 999), (64, 33, 45, 999), (2, 3, 100, 1500)]


@needs_cc
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "F%d-C%d-H%d-N%d" % s)
def test_random_data_float64_matches_fused_step(shape, loss):
    F, C, H, N = shape
    total = 300
    fused, kern = random_pair(F, C, H, N, loss, torch.float64)
    assert kern.design == "blocked"
    a, b = run_random_gamma([fused, kern], total)
    assert a.shape == (total, 3 * C + 1)
    assert torch.equal(a[:, C: 3 * C], b[:, C: 3 * C])  # correct / count per class: integers
    assert rel_err(a, b) < 1e-10
    assert (fused.P - kern.P).abs().max() < 1e-10 * fused.P.abs().max()
    assert (-a[-1, :C].sum()) < (-a[0, :C].sum())  # it trained: the loss fell
    tr = kern.data.train
    torch.testing.assert_close(kern.eval_stats(tr), fused.eval_stats(tr), rtol=1e-10, atol=0)


@needs_cc
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_random_data_float32_matches_fused_step(loss):
    """float32, each update from the same parameters (free float32 runs part after a few
    updates, as on the spiral): the same function every step."""
    fused, kern = random_pair(40, 10, 50, 999, loss, torch.float32)
    gam = torch.rand(100, 10, generator=torch.Generator().manual_seed(3)) + 0.5
    for st in (fused, kern):
        st.begin_chunk(gam)
    for i in range(100):
        fused.P.copy_(kern.P)
        fused.step(i)
        kern.step(i)
        assert (fused.G - kern.G).abs().max() < 1e-4 * fused.G.abs().max()  # seen: 2e-6
    a, b = fused.buf[:100], kern.buf[:100]
    assert rel_err(a[:, :10], b[:, :10]) < 1e-5 and rel_err(a[:, 30], b[:, 30]) < 1e-5
    assert (a[:, 10:20] - b[:, 10:20]).abs().max() <= 1  # a float32 near-tie may flip one sample


@needs_cc
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("where", ["fused", "kernel"])
def test_stats_row_sums_minus_sample_loss_per_class(loss, where):
    """Row i = [Σ_{n∈c} −ℓ_n | correct per class | count per class | ‖g‖] of the parameters
    before update i: ℓ_n = −log p(y_n) (ce) or ‖f(x_n) − e_{y_n}‖² (mse), as loss.py says."""
    F, C = 40, 10
    st = dict(zip(["fused", "kernel"], random_pair(F, C, 50, 999, loss, torch.float64)))[where]
    gam = torch.rand(5, C, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.5
    st.begin_chunk(gam)
    x, y = st.data.train.x, st.data.train.y
    for i in range(5):
        with torch.no_grad():
            f = st.model(x)  # the parameters before update i
        st.step(i)
        neg = log_p_target(f, y) if loss == "ce" else -squared_error(f, y)
        onehot = torch.nn.functional.one_hot(y, C).to(f.dtype)
        want = torch.cat([neg @ onehot, (f.gather(1, y[:, None])[:, 0] >= f.amax(1)).to(f.dtype) @ onehot,
                          onehot.sum(0)])
        row = st.buf[i]
        torch.testing.assert_close(row[:C], want[:C], rtol=1e-12, atol=0)
        assert torch.equal(row[C: 3 * C], want[C:])
        assert float(row[3 * C]) == pytest.approx(float(st.G.norm()), rel=1e-12)


@needs_cc
def test_build_is_cached_and_concurrency_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    paths: list[Path] = []
    # the small design alone: the quickest build
    threads = [threading.Thread(target=lambda: paths.append(ckernel.build(2, 3, False)[0]))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].parent == ckernel.cache_dir()
    assert [p.name for p in ckernel.cache_dir().iterdir()] == [paths[0].name]  # no temp files left
    mtime = paths[0].stat().st_mtime_ns
    assert ckernel.build(2, 3, False)[0] == paths[0] and paths[0].stat().st_mtime_ns == mtime


def test_no_compiler_means_not_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ckernel, "CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(ckernel, "_loaded", {})
    status = ckernel.load_kernel()
    assert status.lib is None
    assert "no C compiler" in status.reason
    cfg = config.Config()
    model = models.build(cfg.model, 2, 3, 0, CPU, torch.float64)
    assert ckernel.usable(cfg, model, CPU) is False
    data = datamod.load(cfg.data, CPU, torch.float64)
    with pytest.raises(RuntimeError, match="C kernel unavailable"):
        ckernel.CKernelMLPStep(cfg, model, data, 16)


def test_usable_refuses_other_models():
    cfg = config.Config()
    two = models.build(config.ModelConfig(hidden=(10, 10)), 2, 3, 0, CPU, torch.float64)
    assert ckernel.usable(cfg, two, CPU) is False
    one = models.build(cfg.model, 2, 3, 0, CPU, torch.float64)
    assert ckernel.usable(cfg, one, "meta") is False
