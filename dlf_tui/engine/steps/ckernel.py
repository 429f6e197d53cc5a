"""A C kernel for the full-batch GD step of a 1-hidden-layer ReLU MLP.

``CKernelMLPStep`` is ``FusedMLPStep`` (same parameter layout, buffers and
statistics row) with ``step`` replaced by one call into a small C function
that does the whole update in a handful of fused passes over L1/L2-resident
data, for either loss of ``[loss] kind``: the Γ-weighted cross-entropy
(``dlf_step_*``) or the Γ-weighted squared error to the one-hot target
(``dlf_step_mse_*``, F = (1/N) Σ_n Γ[y_n]·‖f(x_n) − e_{y_n}‖²); the first C slots of
the statistics row are Σ_{n∈c} −ℓ_n for either.  The C source is ``ckernel.c``
beside this module (package data): a header, then a ``string.Template``
instantiated once per dtype.  It is compiled at run time with the system C
compiler (``$CC``, default ``cc``) and cached under
``$XDG_CACHE_HOME/dlf-tui/kernels/`` (``~/.cache`` by default), keyed by a hash of
source, flags, compiler version and CPU.  ``load_kernel`` returns a
``KernelStatus``: without a working compiler its ``lib`` is None and its
``reason`` says why; nothing raises.

The input width F and the class count C are compile-time constants (``-DNF``,
``-DNC``); one .so per (F, C), F ≤ ``MAX_FEATURES`` and C ≤ ``MAX_CLASSES``.  Two
designs (``ckernel.c``'s header says more): the small one unrolls the per-sample
loops over features and classes and vectorises the sample loop with its
accumulators in registers — the spiral's; the blocked one takes blocks of samples
through the whole update while they sit in cache, every product a register-tiled
loop vectorised over the hidden units — MNIST-1D's (40 features, 10 classes), and
the spiral's shapes once the data outgrows the cache.  For F + C ≤ 6 both are built
and the kernel picks one per call by the data's size (``CKernelMLPStep.design``
says which); beyond, only the blocked one, which needs the ``work`` buffer
``dlf_work_*`` sizes.  ``build(..., blocked=)`` forces one (tests, benchmarks).  No
``-ffast-math``: NaN and inf propagate as in the PyTorch step.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import torch
from torch import nn

from dlf_tui.core.config import Config
from dlf_tui.engine.data import Dataset
from dlf_tui.engine.steps.fused import FusedMLPStep

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
MAX_FEATURES = 256  # the largest input width and class count the kernel is built for
MAX_CLASSES = 64  # (checked at the maxima; the blocked design has no hard limit)
# ckernel.c: the header, then a comment from _NOTE_START to _NOTE_END, then the dtype template
_NOTE_START, _NOTE_END = "/* ==== dtype template", "==== */\n"
# (real, integer of its width, sfx, vl, math suffix) of each instantiation
_DTYPES = (("double", "int64_t", "f64", VL64, ""), ("float", "int32_t", "f32", 2 * VL64, "f"))
# the exported functions: the step per (loss, dtype), and the work size per dtype
STEP_NAMES = {("ce", "f64"): "dlf_step_f64", ("ce", "f32"): "dlf_step_f32",
              ("mse", "f64"): "dlf_step_mse_f64", ("mse", "f32"): "dlf_step_mse_f32"}
WORK_NAMES = {"f64": "dlf_work_f64", "f32": "dlf_work_f32"}
BLOCKED_NAMES = {"f64": "dlf_blocked_f64", "f32": "dlf_blocked_f32"}  # which design a size runs


@functools.cache
def source() -> str:
    """The kernel's C source: ``ckernel.c``'s header and its template once per dtype."""
    text = resources.files("dlf_tui.engine.steps").joinpath("ckernel.c").read_text(encoding="utf-8")
    header, found, rest = text.partition(_NOTE_START)
    template = rest.partition(_NOTE_END)[2]
    if not (found and template):
        raise ValueError("ckernel.c has no dtype template")
    t = Template(template)
    return header + "".join(t.substitute(real=real, mint=mint, sfx=sfx, vl=vl, exp="exp" + m,
                                         log="log" + m, sqrt="sqrt" + m)
                            for real, mint, sfx, vl, m in _DTYPES)


@dataclass(frozen=True)
class KernelStatus:
    """What ``load_kernel`` found for one (F, C)."""

    lib: ctypes.CDLL | None  # the loaded kernel, or None
    reason: str = ""  # why ``lib`` is None ("" when it is not)
    flags: str = ""  # the compiler flags and libraries the kernel was built with


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


def build(features: int, classes: int, blocked: bool | None = None) -> tuple[Path, str]:
    """(path, flags) of the compiled kernel for (F, C), compiling it if not cached: the .so and
    the compiler flags and libraries it was built with.  ``blocked`` forces one of the two
    designs (tests, benchmarks; None: ``ckernel.c`` chooses).  Raises KernelBuildError."""
    version, cpu = _compiler_version(), _cpu_id()
    try:
        text = source()
    except (OSError, ValueError) as e:
        raise KernelBuildError(f"cannot read the kernel source: {e}") from None
    dims = [f"-DNF={int(features)}", f"-DNC={int(classes)}"]
    if blocked is not None:
        dims.append(f"-DDLF_BLOCKED={int(bool(blocked))}")
    d = cache_dir()
    candidates = []
    for flags, libs in FLAG_SETS:
        flags = flags + COMMON_FLAGS + dims
        key = hashlib.sha256("\0".join([text, *flags, *libs, version, cpu]).encode()).hexdigest()[:32]
        path = d / f"{key}.so"
        if path.exists():
            return path, " ".join(flags + libs)
        candidates.append((flags, libs, path))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelBuildError(f"cannot create {d}: {e}") from None
    errors = []
    with tempfile.TemporaryDirectory(prefix="dlf-kernel-") as tmp:
        src = Path(tmp) / "dlf_step.c"
        src.write_text(text)
        for flags, libs, path in candidates:
            # compile beside the target, then rename: atomic, so concurrent builders are safe
            fd, part = tempfile.mkstemp(dir=d, prefix=".part-", suffix=".so")
            os.close(fd)
            try:
                r = subprocess.run([CC, *flags, "-o", part, str(src), *libs],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode == 0:
                    os.replace(part, path)
                    return path, " ".join(flags + libs)
                errors.append(f"{' '.join(flags)}: {r.stderr.strip()[-300:]}")
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
            finally:
                if os.path.exists(part):
                    os.unlink(part)
    raise KernelBuildError(f"{CC} failed: " + " | ".join(errors))


_loaded: dict[tuple, KernelStatus] = {}


def load_kernel(features: int = 2, classes: int = 3, blocked: bool | None = None) -> KernelStatus:
    """The kernel library for (F, C), or why there is none; memoised per process."""
    key = (CC, str(cache_dir()), features, classes, blocked)
    if key not in _loaded:
        _loaded[key] = _load(features, classes, blocked)
    return _loaded[key]


def _load(features: int, classes: int, blocked: bool | None) -> KernelStatus:
    if not (1 <= features <= MAX_FEATURES and 2 <= classes <= MAX_CLASSES):
        return KernelStatus(None, f"no kernel for {features} inputs and {classes} classes "
                                  f"(max {MAX_FEATURES} and {MAX_CLASSES})")
    try:
        path, flags = build(features, classes, blocked)
        lib = ctypes.CDLL(str(path))
        for name in STEP_NAMES.values():
            getattr(lib, name).restype = None  # argtypes stay None: step() passes ctypes objects
        for name in WORK_NAMES.values():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int64]
        for name in BLOCKED_NAMES.values():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int64, ctypes.c_int64]
    except (KernelBuildError, OSError, AttributeError) as e:
        return KernelStatus(None, str(e) or type(e).__name__)
    return KernelStatus(lib, "", flags)


def unusable_reason(cfg: Config, model: nn.Module, device: torch.device | str,
                    blocked: bool | None = None) -> str:
    """Why ``CKernelMLPStep`` does not apply, "" if it does: it needs the CPU, an MLP with
    one ReLU hidden layer, float32/float64, a loss it has (ce, mse) and a kernel for the
    MLP's (F, C)."""
    layers = getattr(model, "layers", None)
    if torch.device(device).type != "cpu" or layers is None or len(layers) != 2:
        return "needs a CPU MLP with exactly one hidden layer"
    if cfg.model.activation != "relu" or layers[0].weight.dtype not in (torch.float32, torch.float64):
        return "needs ReLU and float32/float64"
    if (cfg.loss.kind, "f64") not in STEP_NAMES:
        return f"no kernel for loss {cfg.loss.kind!r}"
    return load_kernel(layers[0].in_features, layers[-1].out_features, blocked).reason


def usable(cfg: Config, model: nn.Module, device: torch.device | str) -> bool:
    """True if ``CKernelMLPStep`` applies (see ``unusable_reason``)."""
    return not unusable_reason(cfg, model, device)


class CKernelMLPStep(FusedMLPStep):
    """``FusedMLPStep`` whose update is one call into the C kernel (CPU, one hidden layer,
    either loss: ``dlf_step_*`` for ce, ``dlf_step_mse_*`` for mse)."""

    needs_label_table = False  # the kernel needs only the per-sample weights

    def __init__(self, cfg: Config, model: nn.Module, data: Dataset, chunk_rows: int, *,
                 blocked: bool | None = None):
        """``blocked`` forces one of the kernel's two designs (tests, benchmarks)."""
        # checked before FusedMLPStep turns the model's parameters into views of its buffer
        why = unusable_reason(cfg, model, data.train.x.device, blocked)
        if why:
            raise RuntimeError(f"C kernel unavailable: {why}")
        C = data.classes
        y = data.train.y.to(torch.int64).contiguous()
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < C):  # the kernel indexes by label
            raise ValueError("labels out of range")
        self._y = y
        self._lr = ctypes.c_double()  # the kernel reads lr through a pointer (see the lr property)
        super().__init__(cfg, model, data, chunk_rows)
        lib = load_kernel(self.Wa[0].shape[1] - 1, C, blocked).lib
        sfx = "f64" if self.dtype == torch.float64 else "f32"
        fn = getattr(lib, STEP_NAMES[self.loss, sfx])
        p = ctypes.c_void_p
        hid = self.H[0]  # rows 0..H-1 of A[1]: contiguous
        # the design the kernel runs for this size, "small" or "blocked" (see ckernel.c)
        self.design = "blocked" if getattr(lib, BLOCKED_NAMES[sfx])(self.N, hid.shape[0]) else "small"
        # the blocked design's scratch (none for the small one)
        self._work = torch.zeros(max(1, getattr(lib, WORK_NAMES[sfx])(hid.shape[0])), dtype=self.dtype)
        assert all(t.is_contiguous() for t in (self.A[0], hid, self.LT, self.d, self.wtab, self.buf))
        fixed = [p(self.A[0].data_ptr()), p(y.data_ptr())]
        rest = [p(self.P.data_ptr()), p(self.G.data_ptr()), p(hid.data_ptr()),
                p(self.LT.data_ptr()), p(self.d.data_ptr()), p(self._work.data_ptr())]
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
