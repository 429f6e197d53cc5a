"""Engine process: ``python -m dlf_tui.engine RUN_DIR [--resume]``.

Started by the CLI or the TUI in its own session, so closing the terminal or the
TUI never stops training.  Exit status: 0 finished/stopped, 1 crashed, 2 could
not start (the reason is the last line of ``engine.log`` and in ``state.json``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .. import runs


def _fail(run_dir: Path, reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    try:
        runs.write_json_atomic(run_dir / runs.STATE, {
            "state": "crashed", "pid": os.getpid(), "reason": reason, "ended": time.time()})
    except OSError:
        pass
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlf_tui.engine")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = ap.parse_args(argv)
    run_dir: Path = args.run_dir
    if not (run_dir / runs.CONFIG).exists():
        print(f"error: {run_dir}: not a run directory (no {runs.CONFIG})", file=sys.stderr)
        return 2
    logging.basicConfig(
        filename=run_dir / runs.LOG, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s")
    runs.write_json_atomic(run_dir / runs.STATE, {"state": "starting", "pid": os.getpid(),
                                                  "started": time.time()})
    from .trainer import Engine, SetupError  # torch is imported here, after the cheap checks

    try:
        engine = Engine(run_dir, resume=args.resume)
    except (SetupError, runs.RunError, OSError) as err:
        logging.getLogger("dlf_tui.engine").error("cannot start: %s", err)
        return _fail(run_dir, str(err))
    try:
        return engine.run()
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
