"""scikit-learn's bundled 8×8 handwritten digits (``data.name = "digits"``).

1,797 grey-level images of the digits 0-9 (the UCI "Optical Recognition of
Handwritten Digits" test set), 8×8 pixels with integer values 0-16, shipped inside
scikit-learn (``sklearn.datasets.load_digits``): nothing is downloaded.  scikit-learn
is an optional extra: ``pip install 'dlf-tui[digits]'``.
"""

from __future__ import annotations

import numpy as np

from dlf_tui.core.errors import SetupError, one_line

N_SAMPLES = 1797
N_FEATURES = 64  # 8×8 pixels, row-major
MAX_VALUE = 16.0  # pixel values are the integers 0..16
CLASS_NAMES = tuple(str(d) for d in range(10))

MISSING = "data.name = digits needs scikit-learn: pip install 'dlf-tui[digits]'"


def read() -> tuple[np.ndarray, np.ndarray]:
    """(x (1797, 64) float64, y (1797,) int64) in scikit-learn's order.

    x is scaled to [0, 1]: the pixel values 0..16 divided by 16 (exactly
    representable, so ``x * 16`` gives back the integers).  Raises ``SetupError``
    when scikit-learn is not installed or cannot be imported.
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "sklearn":
            raise SetupError(MISSING) from None
        raise SetupError(f"data.name = digits: scikit-learn cannot be imported ({one_line(exc)})") from exc
    except ImportError as exc:
        raise SetupError(f"data.name = digits: scikit-learn cannot be imported ({one_line(exc)})") from exc
    x, y = load_digits(return_X_y=True)
    x = np.asarray(x, dtype=np.float64) / MAX_VALUE
    y = np.asarray(y, dtype=np.int64)
    if x.shape != (N_SAMPLES, N_FEATURES) or y.shape != (N_SAMPLES,):
        raise SetupError(f"data.name = digits: scikit-learn returned x {x.shape}, y {y.shape}; "
                         f"expected ({N_SAMPLES}, {N_FEATURES}) and ({N_SAMPLES},)")
    return x, y
