"""The Textual UI.  Never imports torch (the engine process trains)."""
