"""Drivers of a run: one process, several ranks, a sweep's members."""
