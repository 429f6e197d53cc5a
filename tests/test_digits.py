"""data.name = "digits": scikit-learn's bundled 8×8 digits, an optional extra."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from dlf_tui.core.errors import SetupError
from dlf_tui.engine import digits

try:
    import sklearn  # noqa: F401
    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed (pip install 'dlf-tui[digits]')")
def test_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("digits.read touched the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    x, y = digits.read()
    assert x.shape == (1797, 64) and x.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # the pixel values 0..16, over 16
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert y[:10].tolist() == list(range(10))
    x2, y2 = digits.read()
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_missing_sklearn_is_one_clear_line(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn… now fails as if absent
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SetupError) as err:
        digits.read()
    assert str(err.value) == "data.name = digits needs scikit-learn: pip install 'dlf-tui[digits]'"
    assert "\n" not in str(err.value)
