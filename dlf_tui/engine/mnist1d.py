"""MNIST-1D, generated procedurally: no download, no files, no scipy.

MNIST-1D (S. Greydanus and D. Kobak, "Scaling down deep learning with MNIST-1D",
ICML 2024; github.com/greydanus/mnist1d) is a small 1-D stand-in for MNIST: ten
hand-made 12-point templates, one per digit, are padded with zeros, stretched,
randomly scaled, translated (cyclically), filled with correlated noise where the
signal is zero, given i.i.d. noise and a random linear shear, and subsampled to 40
points; 5,000 such sequences (500 per digit), shuffled, centred and scaled to unit
standard deviation as a whole, are split 4,000 train / 1,000 test.

``generate()`` follows that published recipe with the published default arguments
(``get_dataset_args``) and seed 42, drawing numpy's legacy ``RandomState`` in the
same order as the original, so the draws are identical.  The two scipy pieces of
the recipe are written here in numpy: ``interp1d(kind="linear")`` on one row, which
scipy hands to ``np.interp`` (same arithmetic, done for many rows at once), and
``gaussian_filter(·, 2)`` (mode "reflect", truncate 4: a 17-tap kernel, summed in
the order of scipy's symmetric ``correlate1d``; equal to scipy bit for bit given the
same kernel).  The kernel's exponentials come from the C library (``math.exp``):
scipy builds it with ``np.exp``, whose SIMD version on some CPUs is an ulp off.

Against the published frozen file ``mnist1d_data.pkl`` (github.com/greydanus/mnist1d,
commit 7878d96): labels, the time axis ``t`` and the templates are equal, and of the
200,000 values of x_train and x_test, 199,891 are equal bit for bit and 109 differ,
by at most 2.2e-16 (an ulp or two).  Those come from the C ``log`` in numpy's
legacy normal sampler, which rounds a few of the 720,000 noise draws one ulp
differently from the machine that made the file (in 67 of the 68 rows concerned,
changing one ``log`` result by one ulp makes the row equal); numpy cannot remove
them.  ``tests/test_mnist1d.py`` compares with ``tests/data/mnist1d_published.json``
to 1e-12.  About 0.1 s; writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from dlf_tui.core.errors import ConfigError

SEED = 42  # the published seed (get_dataset_args()["seed"])

CLASS_NAMES = tuple(str(d) for d in range(10))

# the published templates of the digits 0-9, 12 points each, before whitening
_TEMPLATES = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)

_EPS = 1e-8  # added to a template before padding, so the signal is never exactly 0
_SIGMA = 2  # of the correlated noise's Gaussian filter (gaussian_filter(noise, 2))
_TRUNCATE = 4.0  # scipy's default


@dataclass(frozen=True)
class Recipe:
    """The published default arguments (``get_dataset_args``), less seed and url."""
    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40


@dataclass
class Splits:
    x_train: np.ndarray  # (4000, 40) float64
    y_train: np.ndarray  # (4000,) int64
    x_test: np.ndarray  # (1000, 40) float64
    y_test: np.ndarray  # (1000,) int64
    t: np.ndarray  # (40,) the templates' vertical axis, transformed and scaled like x
    templates_x: np.ndarray  # (10, 12) whitened templates
    templates_t: np.ndarray  # (12,)
    class_names: tuple[str, ...]
    seed: int
    recipe: Recipe

    @property
    def classes(self) -> int:
        return len(self.class_names)


def templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (10, 12), t (12,), y (10,)): each template whitened, shifted to start at 0
    and divided by 6, as published."""
    x = np.asarray(_TEMPLATES, dtype=np.float64)
    x = x - x.mean(1, keepdims=True)
    x = x / x.std(1, keepdims=True)
    x = x - x[:, :1]
    t = np.linspace(-5, 5, x.shape[1]) / 6.0
    return x / 6.0, t, np.arange(len(_TEMPLATES), dtype=np.int64)


def _interp_rows(y: np.ndarray, n_out: int) -> np.ndarray:
    """Each row of ``y`` (samples at linspace(0, 1, n)) linearly interpolated at
    linspace(0, 1, n_out), with ``np.interp``'s arithmetic: a value on a knot is
    copied, others are slope·(x − x_j) + y_j."""
    n = y.shape[-1]
    xp = np.linspace(0.0, 1.0, n)
    x = np.linspace(0.0, 1.0, n_out)
    j = np.searchsorted(xp, x, side="right") - 1  # xp[j] <= x < xp[j + 1]
    lo = np.minimum(j, n - 2)
    slope = (y[..., lo + 1] - y[..., lo]) / (xp[lo + 1] - xp[lo])
    value = slope * (x - xp[lo]) + y[..., lo]
    return np.where(xp[j] == x, y[..., j], value)


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy's ``_gaussian_kernel1d(sigma, 0, radius)``; the exponentials come from
    the C library (``math.exp``), as numpy's own SIMD ``exp`` may differ by an ulp."""
    radius = int(truncate * float(sigma) + 0.5)
    phi = np.array([math.exp(-0.5 / (sigma * sigma) * float(k * k))
                    for k in range(-radius, radius + 1)])
    return phi / phi.sum()


def _smooth_rows(v: np.ndarray, sigma: float = _SIGMA, truncate: float = _TRUNCATE) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(row, sigma) for each row (mode "reflect":
    d c b a | a b c d | d c b a), summed in the order of scipy's symmetric
    ``correlate1d``: centre·w0, then (left_k + right_k)·w_k for k = radius … 1."""
    w = _gaussian_kernel(sigma, truncate)[::-1]
    r = len(w) // 2
    n = v.shape[-1]
    p = np.pad(v, ((0, 0), (r, r)), mode="symmetric")
    out = p[:, r:r + n] * w[r]
    for k in range(r, 0, -1):
        out = out + (p[:, r - k:r - k + n] + p[:, r + k:r + k + n]) * w[r - k]
    return out


def _recipe(overrides: dict) -> Recipe:
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"mnist1d: unknown recipe argument(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    if "padding" in overrides:
        overrides = {**overrides, "padding": tuple(int(v) for v in overrides["padding"])}
    r = Recipe(**overrides)
    low, high = r.padding
    if r.template_len != len(_TEMPLATES[0]):
        raise ConfigError(f"mnist1d: template_len = {r.template_len}: the templates have "
                          f"{len(_TEMPLATES[0])} points")
    if not 0 <= low <= high:
        raise ConfigError(f"mnist1d: padding = {r.padding}: need 0 <= low <= high")
    if r.max_translation < 1 or r.final_seq_length < 2 or r.num_samples < len(_TEMPLATES):
        raise ConfigError("mnist1d: need max_translation >= 1, final_seq_length >= 2 and "
                          f"num_samples >= {len(_TEMPLATES)}")
    if not 0.0 <= r.train_split <= 1.0:
        raise ConfigError(f"mnist1d: train_split = {r.train_split}: need 0 <= train_split <= 1")
    return r


def generate(seed: int = SEED, **recipe_overrides) -> Splits:
    """The MNIST-1D train/test sets for ``seed`` (default: the published data set).

    ``recipe_overrides`` change the published arguments (see ``Recipe``), e.g.
    ``generate(shuffle_seq=True)``; an unknown name raises ``ConfigError``.
    Deterministic, and writes nothing.
    """
    r = _recipe(recipe_overrides)
    tx, tt, ty = templates()
    low, high = r.padding
    length = r.template_len + high  # every padded template is stretched to this length
    per_class = r.num_samples // len(ty)
    labels = np.repeat(ty, per_class)
    n = len(labels)

    # the random draws, sample by sample in the original's order
    rng = np.random.RandomState(seed)
    pads = np.empty(n, dtype=np.int64)
    scales = np.empty(n)
    shifts = np.empty(n, dtype=np.int64)
    corr = np.empty((n, length))
    iid = np.empty((n, length))
    shears = np.empty(n)
    for i in range(n):
        pads[i] = low + int(rng.rand() * (high - low + 1))
        scales[i] = 1 + r.scale_coeff * (rng.rand() - 0.5)
        shifts[i] = rng.choice(r.max_translation)
        corr[i] = r.corr_noise_scale * rng.randn(length)
        iid[i] = r.iid_noise_scale * rng.randn(length)
        shears[i] = r.shear_scale * (rng.rand() - 0.5)
    order = rng.permutation(n)  # shuffle the samples
    seq_order = rng.permutation(r.final_seq_length) if r.shuffle_seq else None

    # pad with zeros and stretch to ``length`` (rows grouped by padding)
    x = np.empty((n, length))
    for p in np.unique(pads):
        rows = np.flatnonzero(pads == p)
        padded = np.concatenate([tx[labels[rows]] + _EPS, np.zeros((len(rows), p))], axis=1)
        x[rows] = _interp_rows(padded, length)
    x = x * scales[:, None]
    # translate: x[-k:] then x[:-k], i.e. a cyclic shift right by k
    x = np.take_along_axis(x, (np.arange(length)[None, :] - shifts[:, None]) % length, axis=1)
    # correlated noise where the signal is zero, then i.i.d. noise everywhere
    x = np.where(x != 0, x, _smooth_rows(corr))
    x = x + iid
    # shear, then subsample
    x = x - shears[:, None] * np.linspace(-0.5, 0.5, length)
    x = _interp_rows(x, r.final_seq_length)

    xs = x[order]
    ys = labels[order]
    if seq_order is not None:
        xs = xs[:, seq_order]
    t = _interp_rows(_interp_rows(tt, length), r.final_seq_length)
    t = t / xs.std()
    xs = (xs - xs.mean()) / xs.std()

    split = int(n * r.train_split)
    return Splits(x_train=xs[:split], y_train=ys[:split], x_test=xs[split:], y_test=ys[split:],
                  t=t, templates_x=tx, templates_t=tt, class_names=CLASS_NAMES, seed=seed,
                  recipe=r)
