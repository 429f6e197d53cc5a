"""Screens: picker, dashboard, help, quit-confirm, error."""
