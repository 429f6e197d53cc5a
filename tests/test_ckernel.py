"""The C kernel step computes the same function as ``FusedMLPStep`` (and the reference)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf_tui.core import config
from dlf_tui.engine.steps import ckernel
from dlf_tui.engine import models
from dlf_tui.engine import data as datamod
from dlf_tui.core.schedule import Schedule
from dlf_tui.engine.steps.fused import FusedMLPStep

CPU = torch.device("cpu")

needs_cc = pytest.mark.skipif(shutil.which(ckernel.CC) is None,
                              reason=f"no C compiler ({ckernel.CC!r}) on this machine")


def make(cls, reference: dict, dtype: torch.dtype, chunk_rows: int = 512):
    cfg = config.Config()
    data = datamod.load(cfg.data, CPU, dtype)
    model = models.build(cfg.model, 2, 3, 0, CPU, dtype)
    models.load_reference_init(model, reference["init"])
    return cls(cfg, model, data, chunk_rows)


def pair(reference: dict, dtype: torch.dtype) -> tuple[FusedMLPStep, ckernel.CKernelMLPStep]:
    return make(FusedMLPStep, reference, dtype), make(ckernel.CKernelMLPStep, reference, dtype)


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


@needs_cc
def test_float64_matches_fused_step(reference):
    fused, kern = pair(reference, torch.float64)
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
def test_nan_propagates_like_fused_step(reference):
    fused, kern = pair(reference, torch.float64)
    for st in (fused, kern):
        st.P[5] = float("nan")
    a, b = run([fused, kern], 3)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=0, equal_nan=True)
    torch.testing.assert_close(fused.P, kern.P, rtol=1e-10, atol=0, equal_nan=True)
    assert torch.isnan(b[:, 9]).all() and torch.isnan(kern.P).all()


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


@needs_cc
def test_build_is_cached_and_concurrency_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(ckernel.build(2, 3)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].parent == ckernel.cache_dir()
    assert [p.name for p in ckernel.cache_dir().iterdir()] == [paths[0].name]  # no temp files left
    mtime = paths[0].stat().st_mtime_ns
    assert ckernel.build(2, 3)[0] == paths[0] and paths[0].stat().st_mtime_ns == mtime


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
