"""The ``dlf-tui`` command line: parsing, and the headless followers of a run and a sweep."""
