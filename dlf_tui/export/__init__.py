"""Writing a run or a sweep out: CSV tables and the paper's PNG figures."""
