"""The UI process never imports torch (start-up must be instant over SSH)."""

from __future__ import annotations

import subprocess
import sys

UI_MODULES = [
    "dlf_tui.ui.app", "dlf_tui.ui.history", "dlf_tui.ui.session", "dlf_tui.ui.timeline",
    "dlf_tui.ui.messages", "dlf_tui.ui.screens.picker", "dlf_tui.ui.screens.dashboard",
    "dlf_tui.ui.screens.help", "dlf_tui.ui.screens.quit_confirm", "dlf_tui.ui.screens.error",
    "dlf_tui.ui.widgets.loss_chart", "dlf_tui.ui.widgets.weights_chart",
    "dlf_tui.ui.widgets.accuracy_chart", "dlf_tui.ui.widgets.drop_chart",
    "dlf_tui.ui.widgets.sharpness_chart", "dlf_tui.ui.widgets.controls",
    "dlf_tui.ui.widgets.status_bar", "dlf_tui.ui.widgets.event_log",
]


def test_ui_modules_do_not_import_torch():
    code = (
        "import sys, importlib\n"
        f"for m in {UI_MODULES!r}: importlib.import_module(m)\n"
        "from dlf_tui.ui.app import DlfApp, run_app\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH' if bad else 'CLEAN', len(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "CLEAN", out.stdout
