"""Landscape diagnostics: Hessian and NTK top eigenvalues by Lanczos."""
