"""A C kernel for the full-batch GD step of a 1-hidden-layer ReLU MLP.

``CKernelMLPStep`` is ``FusedMLPStep`` (same parameter layout, buffers and
statistics row) with ``step`` replaced by one call into a small C function
that does the whole update in a handful of fused passes over L1/L2-resident
data.  The C source lives here as a string; it is compiled at run time with
the system C compiler (``$CC``, default ``cc``) and cached under
``$XDG_CACHE_HOME/dlf-tui/kernels/`` (``~/.cache`` by default), keyed by a hash
of source, flags, compiler version and CPU.  Without a working compiler
``load_kernel`` returns None and ``REASON`` says why; nothing raises.

The input width F and the class count C are compile-time constants (``-DNF``,
``-DNC``), so the per-sample loops over features and classes unroll and the
sample loop vectorises with its accumulators in registers; one .so per (F, C).
No ``-ffast-math``: NaN and inf propagate as in the PyTorch step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from string import Template

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset
from dlf_tui.engine.steps.select import FusedMLPStep

CC = os.environ.get("CC") or "cc"
# tried in order until one compiles: libmvec (glibc, -z defs so a missing symbol fails the
# link, not the load), then without it, then without -march=native
FLAG_SETS = ((["-O3", "-march=native", "-DDLF_MVEC", "-Wl,-z,defs"], ["-lmvec", "-lm"]),
             (["-O3", "-march=native"], ["-lm"]),
             (["-O3"], ["-lm"]))
VL64 = 8  # lanes per sample block in the float64 kernel (float32: twice as many)
# -fno-math-errno (exp/log need not set errno) lets the softmax loop vectorise; unlike
# -ffast-math it keeps IEEE semantics, so NaN and inf still propagate
COMMON_FLAGS = ["-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-std=gnu11"]
MAX_DIM = 32  # F and C are unrolled in the kernel: keep them small
REASON = ""  # why the last load_kernel() returned None ("" if it did not)
FLAGS = ""  # the compiler flags of the last kernel build() returned

# One function per dtype; $real/$sfx/$vl/$exp/$log/$sqrt are filled in below.
# Layout (row-major): xa (F+1, N) with a last row of ones (never read: the biases are added
# directly); P = [W0a (H, F+1) | W2a (C, H+1)], bias in the last column; G likewise;
# hid (H, N), L and D (C, N) are scratch.
# Sample loops run over blocks of $vl lanes with per-lane accumulators (fixed summation
# order, no horizontal reduction inside the loop), the tail through the same inline code.
_TEMPLATE = r"""
/* Forward for samples n0 .. n0+cnt-1 (cnt <= $vl): hidden rows hid[h] = relu(W0a[h] . xa),
   accumulated at once into the logits L = W2a . [hid; 1], which stay in registers over h. */
static inline __attribute__((always_inline)) void
fwd_$sfx(int cnt, int64_t n0, const $real *restrict xa, const $real *restrict W0,
         const $real *restrict W2, $real *restrict hid, $real *restrict L, int64_t N, int64_t H)
{
    const int64_t H1 = H + 1;
    $real x[NF][$vl], acc[NC][$vl];
    for (int j = 0; j < cnt; j++) {
        for (int f = 0; f < NF; f++) x[f][j] = xa[f * N + n0 + j];
        for (int c = 0; c < NC; c++) acc[c][j] = W2[c * H1 + H];
    }
    for (int64_t h = 0; h < H; h++) {
        const $real *restrict wr = W0 + h * F1;
#pragma omp simd
        for (int j = 0; j < cnt; j++) {
            $real z = wr[NF];  /* the bias (xa's row of ones) */
            for (int f = 0; f < NF; f++) z += wr[f] * x[f][j];
            z = z < 0 ? 0 : z;  /* ReLU that keeps NaN, like clamp_min */
            hid[h * N + n0 + j] = z;
            for (int c = 0; c < NC; c++) acc[c][j] += W2[c * H1 + h] * z;
        }
    }
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < cnt; j++) L[c * N + n0 + j] = acc[c][j];
}

/* Backward for hidden unit h and samples n0 .. n0+cnt-1, one pass: the masked hidden
   delta, its first-layer gradient, and the second-layer gradient, into per-lane sums. */
static inline __attribute__((always_inline)) void
bwd_$sfx(int cnt, int64_t n0, const $real *restrict xa, const $real *restrict a,
         const $real *restrict D, const $real *restrict v, $real g0[F1][$vl], $real g2[NC][$vl],
         int64_t N)
{
#pragma omp simd
    for (int j = 0; j < cnt; j++) {
        const int64_t n = n0 + j;
        $real da = 0;
        for (int c = 0; c < NC; c++) da += v[c] * D[c * N + n];
        da = a[n] <= 0 ? 0 : da;  /* as threshold_backward */
        for (int f = 0; f < NF; f++) g0[f][j] += da * xa[f * N + n];
        g0[NF][j] += da;
        for (int c = 0; c < NC; c++) g2[c][j] += D[c * N + n] * a[n];
    }
}

/* One full-batch gradient-descent update.  Writes the statistics of the forward pass
   before the update, out = [sum log p(y) per class | correct per class | count per class
   | ||G||], then P -= lr * G.  Labels must lie in 0 .. NC-1. */
void dlf_step_$sfx(const $real *restrict xa, const int64_t *restrict y,
                   const $real *restrict w, $real *restrict P, $real *restrict G,
                   $real *restrict hid, $real *restrict L, $real *restrict D,
                   $real *restrict out, const double *restrict lr, int64_t N, int64_t H)
{
    const int64_t H1 = H + 1, Nv = N - N % $vl;
    const $real *W0 = P, *W2 = P + H * F1;
    $real *gW0 = G, *gW2 = G + H * F1;

    for (int64_t n0 = 0; n0 < Nv; n0 += $vl) fwd_$sfx($vl, n0, xa, W0, W2, hid, L, N, H);
    if (Nv < N) fwd_$sfx((int)(N - Nv), Nv, xa, W0, W2, hid, L, N, H);

    /* max-subtracted log-softmax; D = dF/dlogits = (softmax - onehot) * w; the logits
       are dead afterwards, so rows 0 and 1 of L take log p(y_n) and "correct" */
#pragma omp simd
    for (int64_t n = 0; n < N; n++) {
        const $real yn = ($real)y[n];  /* compared as $real: an int64 compare stops GCC vectorising */
        $real l[NC], e[NC], m = L[n], s = 0, ly = 0;
        for (int c = 0; c < NC; c++) {
            l[c] = L[c * N + n];
            m = ((l[c] > m) | (l[c] != l[c])) ? l[c] : m;  /* a max that propagates NaN */
            ly = c == yn ? l[c] : ly;
        }
        for (int c = 0; c < NC; c++) { e[c] = $exp(l[c] - m); s += e[c]; }
        for (int c = 0; c < NC; c++) D[c * N + n] = (e[c] / s - (c == yn)) * w[n];
        L[n] = (ly - m) - $log(s);
        L[N + n] = ly >= m;
    }
    $real lps[NC] = {0}, cor[NC] = {0}, cnt[NC] = {0}, gb[NC] = {0};
    for (int64_t n = 0; n < N; n++) {
        const int64_t yn = y[n];
        lps[yn] += L[n];
        cor[yn] += L[N + n];
        cnt[yn] += 1;
        for (int c = 0; c < NC; c++) gb[c] += D[c * N + n];
    }
    for (int c = 0; c < NC; c++) {
        out[c] = lps[c]; out[NC + c] = cor[c]; out[2 * NC + c] = cnt[c];
        gW2[c * H1 + H] = gb[c];
    }

    for (int64_t h = 0; h < H; h++) {
        $real v[NC], g0[F1][$vl] = {{0}}, g2[NC][$vl] = {{0}};
        for (int c = 0; c < NC; c++) v[c] = W2[c * H1 + h];
        for (int64_t n0 = 0; n0 < Nv; n0 += $vl) bwd_$sfx($vl, n0, xa, hid + h * N, D, v, g0, g2, N);
        if (Nv < N) bwd_$sfx((int)(N - Nv), Nv, xa, hid + h * N, D, v, g0, g2, N);
        for (int f = 0; f < F1; f++) {
            $real s = 0;
            for (int j = 0; j < $vl; j++) s += g0[f][j];
            gW0[h * F1 + f] = s;
        }
        for (int c = 0; c < NC; c++) {
            $real s = 0;
            for (int j = 0; j < $vl; j++) s += g2[c][j];
            gW2[c * H1 + h] = s;
        }
    }

    /* ||G|| and the update in one pass */
    const int64_t total = H * F1 + NC * H1;
    const $real eta = ($real)*lr;
    $real ss = 0;
#pragma omp simd reduction(+:ss)
    for (int64_t i = 0; i < total; i++) {
        ss += G[i] * G[i];
        P[i] -= eta * G[i];
    }
    out[3 * NC] = $sqrt(ss);
}
"""

_HEADER = """#include <math.h>
#include <stdint.h>
#if !defined(NF) || !defined(NC)
#error compile with -DNF=<input features> -DNC=<classes>
#endif
#define F1 (NF + 1)
#ifdef DLF_MVEC /* glibc's libmvec has vector exp/log: lets the softmax loop vectorise */
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log(double);
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float logf(float);
#endif
"""

SOURCE = _HEADER + "".join(
    Template(_TEMPLATE).substitute(real=real, sfx=sfx, vl=vl, exp="exp" + m, log="log" + m, sqrt="sqrt" + m)
    for real, sfx, vl, m in (("double", "f64", VL64, ""), ("float", "f32", 2 * VL64, "f")))


class KernelBuildError(RuntimeError):
    """The kernel could not be compiled (no compiler, compiler error, unwritable cache)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlf-tui" / "kernels"


def _compiler_version() -> str:
    try:
        r = subprocess.run([CC, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"no C compiler ({CC!r}: {e})") from None
    if r.returncode:
        raise KernelBuildError(f"{CC} --version failed: {r.stderr.strip()[:200]}")
    return r.stdout


def _cpu_id() -> str:
    """Part of the cache key, so a shared home never serves a -march=native build to another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def build(features: int, classes: int) -> Path:
    """Path of the compiled kernel for (F, C), compiling it if not cached; raises KernelBuildError."""
    global FLAGS
    version, cpu = _compiler_version(), _cpu_id()
    dims = [f"-DNF={int(features)}", f"-DNC={int(classes)}"]
    d = cache_dir()
    candidates = []
    for flags, libs in FLAG_SETS:
        flags = flags + COMMON_FLAGS + dims
        key = hashlib.sha256("\0".join([SOURCE, *flags, *libs, version, cpu]).encode()).hexdigest()[:32]
        path = d / f"{key}.so"
        if path.exists():
            FLAGS = " ".join(flags + libs)
            return path
        candidates.append((flags, libs, path))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelBuildError(f"cannot create {d}: {e}") from None
    errors = []
    with tempfile.TemporaryDirectory(prefix="dlf-kernel-") as tmp:
        src = Path(tmp) / "dlf_step.c"
        src.write_text(SOURCE)
        for flags, libs, path in candidates:
            # compile beside the target, then rename: atomic, so concurrent builders are safe
            fd, part = tempfile.mkstemp(dir=d, prefix=".part-", suffix=".so")
            os.close(fd)
            try:
                r = subprocess.run([CC, *flags, "-o", part, str(src), *libs],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode == 0:
                    os.replace(part, path)
                    FLAGS = " ".join(flags + libs)
                    return path
                errors.append(f"{' '.join(flags)}: {r.stderr.strip()[-300:]}")
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
            finally:
                if os.path.exists(part):
                    os.unlink(part)
    raise KernelBuildError(f"{CC} failed: " + " | ".join(errors))


_loaded: dict[tuple, tuple[ctypes.CDLL | None, str]] = {}


def load_kernel(features: int = 2, classes: int = 3) -> ctypes.CDLL | None:
    """The kernel library for (F, C), or None with ``REASON`` set; memoised per process."""
    global REASON
    key = (CC, str(cache_dir()), features, classes)
    if key not in _loaded:
        lib, why = None, ""
        if not (1 <= features <= MAX_DIM and 2 <= classes <= MAX_DIM):
            why = f"no kernel for {features} inputs and {classes} classes (max {MAX_DIM})"
        else:
            try:
                lib = ctypes.CDLL(str(build(features, classes)))
                for name in ("dlf_step_f64", "dlf_step_f32"):
                    getattr(lib, name).restype = None  # argtypes stay None: step() passes ctypes objects
            except (KernelBuildError, OSError, AttributeError) as e:
                lib, why = None, str(e)
        _loaded[key] = (lib, why)
    lib, REASON = _loaded[key]
    return lib


def usable(cfg: Config, model: nn.Module, device: torch.device | str) -> bool:
    """True if ``CKernelMLPStep`` applies: CPU, an MLP with one ReLU hidden layer, f32/f64, a kernel."""
    global REASON
    layers = getattr(model, "layers", None)
    if torch.device(device).type != "cpu" or layers is None or len(layers) != 2:
        REASON = "needs a CPU MLP with exactly one hidden layer"
        return False
    if cfg.model.activation != "relu" or layers[0].weight.dtype not in (torch.float32, torch.float64):
        REASON = "needs ReLU and float32/float64"
        return False
    return load_kernel(layers[0].in_features, layers[-1].out_features) is not None


class CKernelMLPStep(FusedMLPStep):
    """``FusedMLPStep`` whose update is one call into the C kernel (CPU, one hidden layer)."""

    needs_label_table = False  # the kernel needs only the per-sample weights

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int):
        # checked before FusedMLPStep turns the model's parameters into views of its buffer
        if not usable(cfg, model, data.train.x.device):
            raise RuntimeError(f"C kernel unavailable: {REASON}")
        C = data.classes
        y = data.train.y.to(torch.int64).contiguous()
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < C):  # the kernel indexes by label
            raise ValueError("labels out of range")
        self._y = y
        self._lr = ctypes.c_double()  # the kernel reads lr through a pointer (see the lr property)
        super().__init__(cfg, model, data, chunk_rows)
        lib = load_kernel(self.Wa[0].shape[1] - 1, C)
        fn = lib.dlf_step_f64 if self.dtype == torch.float64 else lib.dlf_step_f32
        p = ctypes.c_void_p
        hid = self.H[0]  # rows 0..H-1 of A[1]: contiguous
        assert all(t.is_contiguous() for t in (self.A[0], hid, self.LT, self.d, self.wtab, self.buf))
        fixed = [p(self.A[0].data_ptr()), p(y.data_ptr())]
        rest = [p(self.P.data_ptr()), p(self.G.data_ptr()), p(hid.data_ptr()),
                p(self.LT.data_ptr()), p(self.d.data_ptr())]
        tail = [ctypes.byref(self._lr), ctypes.c_int64(self.N), ctypes.c_int64(hid.shape[0])]
        # one ready argument tuple per chunk row: step(i) is a single foreign call
        self._args = [tuple(fixed + [p(self.wtab[i].data_ptr())] + rest
                            + [p(self.buf[i].data_ptr())] + tail) for i in range(chunk_rows)]
        self._fn = fn

    @property
    def lr(self) -> float:
        return self._lr.value

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr.value = float(value)

    def begin_chunk(self, gammas: torch.Tensor) -> None:
        torch.mm(gammas, self.YT, out=self.wtab[: gammas.shape[0]]).div_(self.N)

    def step(self, i: int) -> None:
        self._fn(*self._args[i])
