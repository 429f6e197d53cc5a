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

from ..config import Config
from .data import Dataset
from .steppers import FusedMLPStep

CC = os.environ.get("CC") or "cc"
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # the second if -march=native is refused
COMMON_FLAGS = ["-fPIC", "-shared", "-fopenmp-simd", "-std=gnu11"]
MAX_DIM = 32  # F and C are unrolled in the kernel: keep them small
REASON = ""  # why the last load_kernel() returned None ("" if it did not)

# One function per dtype; $real/$sfx/$exp/$log are filled in below.
# Layout (row-major): xa (F+1, N) with a last row of ones; P = [W0a (H, F+1) | W2a (C, H+1)],
# bias in the last column; G likewise.  hid (H, N), L and D (C, N) are scratch.
_TEMPLATE = r"""
/* One full-batch gradient-descent update; writes the statistics row
   out = [sum log p(y) per class | correct per class | count per class | ||G||]
   of the forward pass before the update, then P -= lr * G. */
void dlf_step_$sfx(const $real *restrict xa, const int64_t *restrict y,
                   const $real *restrict w, $real *restrict P, $real *restrict G,
                   $real *restrict hid, $real *restrict L, $real *restrict D,
                   $real *restrict out, const double *restrict lr, int64_t N, int64_t H)
{
    const int64_t H1 = H + 1;
    const $real *W0 = P, *W2 = P + H * F1;
    $real *gW0 = G, *gW2 = G + H * F1;

    /* forward: hidden row h = relu(W0a[h] . xa), accumulated into the logits at once */
    for (int c = 0; c < NC; c++)
        for (int64_t n = 0; n < N; n++) L[c * N + n] = W2[c * H1 + H];
    for (int64_t h = 0; h < H; h++) {
        $real wr[F1], v[NC];
        for (int f = 0; f < F1; f++) wr[f] = W0[h * F1 + f];
        for (int c = 0; c < NC; c++) v[c] = W2[c * H1 + h];
        $real *restrict a = hid + h * N;
#pragma omp simd
        for (int64_t n = 0; n < N; n++) {
            $real z = 0;
            for (int f = 0; f < F1; f++) z += wr[f] * xa[f * N + n];
            z = z < 0 ? 0 : z; /* ReLU that keeps NaN, like clamp_min */
            a[n] = z;
            for (int c = 0; c < NC; c++) L[c * N + n] += v[c] * z;
        }
    }

    /* max-subtracted log-softmax, statistics, D = dF/dlogits = (softmax - onehot) * w */
    $real lps[NC] = {0}, cor[NC] = {0}, cnt[NC] = {0}, gb[NC] = {0};
    for (int64_t n = 0; n < N; n++) {
        const int64_t yn = y[n];
        $real l[NC], e[NC], m = L[n], s = 0;
        for (int c = 0; c < NC; c++) {
            l[c] = L[c * N + n];
            m = (l[c] > m || l[c] != l[c]) ? l[c] : m; /* max that propagates NaN */
        }
        for (int c = 0; c < NC; c++) { e[c] = $exp(l[c] - m); s += e[c]; }
        const $real ls = $log(s);
        for (int c = 0; c < NC; c++) {
            const $real d = (e[c] / s - (c == yn)) * w[n];
            D[c * N + n] = d;
            gb[c] += d;
        }
        lps[yn] += (l[yn] - m) - ls;
        cor[yn] += l[yn] >= m;
        cnt[yn] += 1;
    }
    for (int c = 0; c < NC; c++) {
        out[c] = lps[c]; out[NC + c] = cor[c]; out[2 * NC + c] = cnt[c];
        gW2[c * H1 + H] = gb[c];
    }

    /* backward, one pass per hidden row: masked hidden delta, its first-layer
       gradient, and the second-layer gradient */
    for (int64_t h = 0; h < H; h++) {
        const $real *restrict a = hid + h * N;
        $real v[NC], g2[NC] = {0}, g0[F1] = {0};
        for (int c = 0; c < NC; c++) v[c] = W2[c * H1 + h];
#pragma omp simd reduction(+:g2[:NC], g0[:F1])
        for (int64_t n = 0; n < N; n++) {
            $real da = 0;
            for (int c = 0; c < NC; c++) da += v[c] * D[c * N + n];
            da = a[n] <= 0 ? 0 : da; /* as threshold_backward */
            for (int f = 0; f < F1; f++) g0[f] += da * xa[f * N + n];
            for (int c = 0; c < NC; c++) g2[c] += D[c * N + n] * a[n];
        }
        for (int f = 0; f < F1; f++) gW0[h * F1 + f] = g0[f];
        for (int c = 0; c < NC; c++) gW2[c * H1 + h] = g2[c];
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

SOURCE = ("#include <math.h>\n#include <stdint.h>\n"
          "#if !defined(NF) || !defined(NC)\n#error compile with -DNF=<features> -DNC=<classes>\n#endif\n"
          "#define F1 (NF + 1)\n"
          + Template(_TEMPLATE).substitute(real="double", sfx="f64", exp="exp", log="log", sqrt="sqrt")
          + Template(_TEMPLATE).substitute(real="float", sfx="f32", exp="expf", log="logf", sqrt="sqrtf"))


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
    version, cpu = _compiler_version(), _cpu_id()
    dims = [f"-DNF={int(features)}", f"-DNC={int(classes)}"]
    d = cache_dir()
    candidates = []
    for flags in FLAG_SETS:
        flags = flags + COMMON_FLAGS + dims
        key = hashlib.sha256("\0".join([SOURCE, *flags, version, cpu]).encode()).hexdigest()[:32]
        path = d / f"{key}.so"
        if path.exists():
            return path
        candidates.append((flags, path))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelBuildError(f"cannot create {d}: {e}") from None
    errors = []
    with tempfile.TemporaryDirectory(prefix="dlf-kernel-") as tmp:
        src = Path(tmp) / "dlf_step.c"
        src.write_text(SOURCE)
        for flags, path in candidates:
            # compile beside the target, then rename: atomic, so concurrent builders are safe
            fd, part = tempfile.mkstemp(dir=d, prefix=".part-", suffix=".so")
            os.close(fd)
            try:
                r = subprocess.run([CC, *flags, "-o", part, str(src), "-lm"],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode == 0:
                    os.replace(part, path)
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

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int):
        self._lr = ctypes.c_double()  # the kernel reads lr through a pointer (see the lr property)
        super().__init__(cfg, model, data, chunk_rows)
        if len(self.Wa) != 2 or self.device.type != "cpu":
            raise ValueError("CKernelMLPStep needs a CPU MLP with exactly one hidden layer")
        F, C = self.Wa[0].shape[1] - 1, self.C
        lib = load_kernel(F, C)
        if lib is None:
            raise RuntimeError(f"C kernel unavailable: {REASON}")
        fn = lib.dlf_step_f64 if self.dtype == torch.float64 else lib.dlf_step_f32
        y = self.data.train.y.to(torch.int64).contiguous()
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < C):  # the kernel indexes by label
            raise ValueError("labels out of range")
        self._y = y
        # the kernel needs only the per-sample weights, not the parent's (k, C, N) table
        del self.nywtab, self.nyw_rows
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
