"""Dashboard widgets: one per module (charts, controls, status bar, event log)."""
