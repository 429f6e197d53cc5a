"""``python -m dlf_tui`` is the ``dlf-tui`` command."""

from dlf_tui.cli.main import main

main()
