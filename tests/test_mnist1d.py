"""MNIST-1D is generated, not downloaded, and equals the published data set.

``tests/data/mnist1d_published.json`` holds values read from the authors' frozen
file (``mnist1d_data.pkl`` of github.com/greydanus/mnist1d; the JSON's ``source``
says which commit): five full rows, every label, the time axis, the templates and
whole-array statistics.
"""

from __future__ import annotations

import builtins
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlf_tui.core.errors import ConfigError
from dlf_tui.engine import mnist1d

PUBLISHED = Path(__file__).resolve().parent / "data" / "mnist1d_published.json"
ATOL = 1e-12  # the generated values are within 2.2e-16 of the file (see mnist1d's docstring)


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(PUBLISHED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def data() -> mnist1d.Splits:
    return mnist1d.generate()


def _labels(digits: str) -> np.ndarray:
    return np.frombuffer(digits.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")


def _stats(x: np.ndarray) -> dict:
    n, m = x.shape
    w = (np.arange(n * m).reshape(n, m) % 97) / 97.0
    return {"sum": x.sum(), "mean": x.mean(), "std": x.std(), "sum_sq": (x * x).sum(),
            "min": x.min(), "max": x.max(), "weighted_sum": (x * w).sum(),
            "column_means": x.mean(0)}


def test_shapes_dtypes_labels(data):
    assert data.x_train.shape == (4000, 40) and data.x_train.dtype == np.float64
    assert data.x_test.shape == (1000, 40) and data.x_test.dtype == np.float64
    assert data.y_train.shape == (4000,) and data.y_train.dtype == np.int64
    assert data.y_test.shape == (1000,) and data.y_test.dtype == np.int64
    assert data.t.shape == (40,)
    assert data.class_names == tuple("0123456789") and data.classes == 10
    assert data.seed == mnist1d.SEED == 42
    y = np.concatenate([data.y_train, data.y_test])
    assert np.bincount(y, minlength=10).tolist() == [500] * 10  # 500 per digit before the split
    x = np.concatenate([data.x_train, data.x_test])
    assert np.isfinite(x).all()
    assert abs(x.mean()) < 1e-12 and abs(x.std() - 1.0) < 1e-12  # centred, unit std as a whole


def test_equals_published(data, published):
    src = published["source"]
    assert src["repository"] == "github.com/greydanus/mnist1d" and src["file"] == "mnist1d_data.pkl"
    assert published["shapes"] == {"x_train": [4000, 40], "x_test": [1000, 40]}
    np.testing.assert_array_equal(data.y_train, _labels(published["y_train"]))
    np.testing.assert_array_equal(data.y_test, _labels(published["y_test"]))
    for i, row in published["x_train_rows"].items():
        np.testing.assert_allclose(data.x_train[int(i)], row, rtol=0, atol=ATOL, err_msg=f"x_train[{i}]")
    for i, row in published["x_test_rows"].items():
        np.testing.assert_allclose(data.x_test[int(i)], row, rtol=0, atol=ATOL, err_msg=f"x_test[{i}]")
    np.testing.assert_allclose(data.t, published["t"], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(data.templates_x, published["templates_x"])
    np.testing.assert_array_equal(data.templates_t, published["templates_t"])
    for name, x in (("x_train", data.x_train), ("x_test", data.x_test)):
        ours, theirs = _stats(x), published[f"{name}_stats"]
        assert set(ours) == set(theirs)
        for key, value in ours.items():
            np.testing.assert_allclose(value, theirs[key], rtol=0, atol=1e-10, err_msg=f"{name} {key}")


def test_no_network_no_files(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist1d.generate touched the network")

    def no_open(*args, **kwargs):
        raise AssertionError(f"mnist1d.generate opened a file: {args[:1]}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", no_open)
        s = mnist1d.generate()
    assert s.x_train.shape == (4000, 40) and s.y_test.shape == (1000,)
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_imports_neither_scipy_nor_torch():
    code = ("import sys; from dlf_tui.engine import mnist1d; mnist1d.generate(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'torch', 'requests', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_deterministic(data):
    again = mnist1d.generate()
    for name in ("x_train", "y_train", "x_test", "y_test", "t"):
        np.testing.assert_array_equal(getattr(again, name), getattr(data, name), err_msg=name)


def test_other_seed_differs(data):
    other = mnist1d.generate(seed=0)
    assert other.x_train.shape == (4000, 40) and other.seed == 0
    assert not np.allclose(other.x_train, data.x_train)
    assert (other.y_train != data.y_train).mean() > 0.5
    y = np.concatenate([other.y_train, other.y_test])
    assert np.bincount(y, minlength=10).tolist() == [500] * 10


def test_recipe_overrides(data):
    small = mnist1d.generate(num_samples=500, final_seq_length=20, train_split=0.5)
    assert small.x_train.shape == (250, 20) and small.x_test.shape == (250, 20)
    shuffled = mnist1d.generate(shuffle_seq=True)  # the same draws, then one permutation of time
    np.testing.assert_array_equal(shuffled.y_train, data.y_train)
    # each column of the shuffled set is one column of the published order
    dist = np.abs(shuffled.x_train.T[:, None, :] - data.x_train.T[None, :, :]).max(-1)
    match = dist.argmin(1)
    assert dist.min(1).max() < 1e-12 and sorted(match) == list(range(40))
    assert (match != np.arange(40)).any()
    with pytest.raises(ConfigError, match="unknown recipe argument"):
        mnist1d.generate(nonsense=1)
    with pytest.raises(ConfigError, match="padding"):
        mnist1d.generate(padding=(10, 5))


def test_interp_rows_is_np_interp():
    rng = np.random.default_rng(1)
    for n, m in ((48, 72), (72, 72), (72, 40), (12, 72), (2, 5)):
        y = rng.standard_normal((20, n))
        ours = mnist1d._interp_rows(y, m)
        ref = np.stack([np.interp(np.linspace(0, 1, m), np.linspace(0, 1, n), row) for row in y])
        np.testing.assert_array_equal(ours, ref)


def test_smooth_rows_is_a_reflecting_gaussian_filter():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((10, 72))
    w = mnist1d._gaussian_kernel(2, 4.0)
    assert len(w) == 17 and abs(w.sum() - 1.0) < 1e-15
    np.testing.assert_allclose(w, w[::-1], rtol=0, atol=0)
    padded = np.pad(v, ((0, 0), (8, 8)), mode="symmetric")  # scipy's "reflect"
    ref = np.stack([np.convolve(row, w, mode="valid") for row in padded])
    np.testing.assert_allclose(mnist1d._smooth_rows(v), ref, rtol=0, atol=1e-15)


def test_pieces_equal_scipy_bit_for_bit():
    """Where scipy is installed: our interpolation equals interp1d, and our filter equals
    gaussian_filter given scipy's kernel (scipy's own kernel uses numpy's exp, which on
    some CPUs differs by an ulp from the C library's; ours uses the C library's)."""
    scipy_ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is not installed (optional cross-check)")
    from scipy.interpolate import interp1d

    rng = np.random.default_rng(3)
    v = rng.standard_normal((50, 72))
    w = mnist1d._gaussian_kernel(2, 4.0)
    ref = np.stack([scipy_ndimage.correlate1d(row, w[::-1], mode="reflect") for row in v])
    np.testing.assert_array_equal(mnist1d._smooth_rows(v), ref)
    np.testing.assert_allclose(mnist1d._smooth_rows(v), np.stack([scipy_ndimage.gaussian_filter(r, 2) for r in v]),
                               rtol=0, atol=1e-15)
    for n, m in ((48, 72), (72, 40)):
        y = rng.standard_normal((20, n))
        # one row at a time, as the recipe calls it (scipy then uses np.interp's arithmetic)
        ref = np.stack([interp1d(np.linspace(0, 1, n), row, kind="linear")(np.linspace(0, 1, m)) for row in y])
        np.testing.assert_array_equal(mnist1d._interp_rows(y, m), ref)
