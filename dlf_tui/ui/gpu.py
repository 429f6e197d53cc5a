"""The GPU a live CUDA run uses, for the status bar: memory in use / total and
utilisation, read through NVML (``pip install 'dlf-tui[gpu]'``: nvidia-ml-py,
module ``pynvml``) when it is installed; nothing otherwise.  Never torch.

The numbers are the device's (every process on it), read at most once a
``REFRESH_S`` in a short thread (NVML's first call can take a while), so the
status bar only ever reads the last line: like the rate, it follows the run
within a second or so.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

REFRESH_S = 1.0
GIB = 1024 ** 3


def gpu_text(used: float, total: float, util: float | None, index: int | None = None) -> str:
    """``GPU 3.2/80 GiB 97%``: memory in use / total (GiB) and utilisation.

    >>> gpu_text(3.2 * GIB, 80 * GIB, 97)
    'GPU 3.2/80 GiB 97%'
    """
    def gib(v: float) -> str:
        g = v / GIB
        return f"{g:.1f}" if g < 10 else f"{g:.0f}"

    name = "GPU" if index is None else f"GPU{index}"
    pct = "" if util is None else f" {util:.0f}%"
    return f"{name} {gib(used)}/{gib(total)} GiB{pct}"


def nvml_index(device: str, visible: str | None = None) -> int | str | None:
    """The NVML device (an index, or a UUID string) behind a torch device
    string (``cuda``, ``cuda:1``), through ``CUDA_VISIBLE_DEVICES`` when set
    (torch's cuda:N is the N-th visible GPU); None when not a CUDA device."""
    if not device.startswith("cuda"):
        return None
    _, _, n = device.partition(":")
    try:
        k = int(n) if n else 0
    except ValueError:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or not visible.strip():
        return k
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if k >= len(ids):
        return None
    return int(ids[k]) if ids[k].isdigit() else ids[k]


class GpuProbe:
    """Reads one device through NVML; ``line(device)`` never blocks."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml  # a stand-in in tests; else pynvml, imported on first use
        self._failed = False
        self._text = ""
        self._read_at = -1e9
        self._busy = False
        self._lock = threading.Lock()

    def line(self, device: str) -> str:
        """The last reading for ``device`` (refreshed in the background)."""
        now = time.monotonic()
        with self._lock:
            stale = not self._busy and not self._failed and now - self._read_at >= REFRESH_S
            if stale:
                self._busy, self._read_at = True, now
        if stale:
            threading.Thread(target=self._refresh, args=(device,), name="nvml", daemon=True).start()
        return self._text

    def read(self, device: str) -> str:
        """One reading now (in the calling thread): the text, or "" when unknown."""
        nvml = self._load()
        where = nvml_index(device)
        if nvml is None or where is None:
            return ""
        try:
            if isinstance(where, int):
                handle = nvml.nvmlDeviceGetHandleByIndex(where)
            else:
                handle = nvml.nvmlDeviceGetHandleByUUID(where)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # noqa: BLE001 - not supported on this device (MIG)
                util = None
        except Exception:  # noqa: BLE001 - any NVML error: show nothing
            return ""
        return gpu_text(float(mem.used), float(mem.total), util,
                        where if isinstance(where, int) and where else None)

    def _refresh(self, device: str) -> None:
        try:
            text = self.read(device)
        finally:
            with self._lock:
                self._busy = False
        self._text = text

    def _load(self) -> Any:
        if self._failed:
            return None
        if self._nvml is None:
            try:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
            except Exception:  # noqa: BLE001 - not installed, no driver: nothing to show
                self._failed = True
                return None
            self._nvml = pynvml
        return self._nvml
