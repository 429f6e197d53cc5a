"""Where the dashboard's data comes from: a live engine's socket, or the run directory on disk."""
