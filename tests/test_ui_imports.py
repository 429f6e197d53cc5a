"""The UI process never imports torch (the engine process does), and
its start path (the app and the picker) does not import numpy either.

Every module of the torch-free packages is found by walking them (so a new or
lazily imported module, such as the compare and sweep screens or the heatmap
chart, is checked as soon as it exists) and imported in one fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

PACKAGES = ["dlf_tui.ui", "dlf_tui.core", "dlf_tui.store", "dlf_tui.wire", "dlf_tui.cli",
            "dlf_tui.export"]

CODE = r"""
import importlib, json, pkgutil, sys

def heavy():
    return sorted({m.split(".")[0] for m in sys.modules} & {"torch", "numpy"})

from dlf_tui.ui.app import DlfApp, run_app  # the start path: the app and the picker
start = heavy()
modules = []
for name in PACKAGES:
    pkg = importlib.import_module(name)
    modules.append(name)
    for info in pkgutil.walk_packages(pkg.__path__, name + "."):
        importlib.import_module(info.name)
        modules.append(info.name)
torch = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(json.dumps({"start": start, "modules": modules, "torch": torch[:5]}))
"""


def _import_all() -> dict:
    code = f"PACKAGES = {PACKAGES!r}\n" + CODE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_torch_in_any_ui_or_shared_module_and_no_numpy_on_the_start_path():
    got = _import_all()
    assert got["start"] == [], f"the UI start path imported {got['start']}"
    assert got["torch"] == [], f"importing {PACKAGES} imported torch: {got['torch']}"
    mods = set(got["modules"])
    # the walk reaches the lazily imported modules too
    for lazy in ("dlf_tui.ui.screens.compare", "dlf_tui.ui.screens.sweep",
                 "dlf_tui.ui.screens.dashboard", "dlf_tui.ui.widgets.charts.heatmap",
                 "dlf_tui.ui.widgets.charts.compare", "dlf_tui.ui.session.pump"):
        assert lazy in mods, lazy
