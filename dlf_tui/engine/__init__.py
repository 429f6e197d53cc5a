"""The training engine: the only package that imports torch (never textual or rich)."""
