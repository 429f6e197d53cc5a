"""A Footer that rebuilds its keys only when they change.

Textual's Footer recomposes (one widget per key) on every focus change and
screen-stack update; with every action in the footer that was a good part of
the dashboard's start-up.  The keys shown, their labels and enabled state are
the same, so skip those rebuilds."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class StableFooter(Footer):
    _signature: tuple | None = None

    def bindings_changed(self, screen: Screen):  # noqa: ANN201 - None, or Footer's coroutine
        """Skip an unchanged rebuild; else Footer's own (a coroutine before
        Textual 4: returned, so that whoever called this awaits it)."""
        try:
            sig = tuple((key, b.binding.description, b.binding.show, b.enabled)
                        for key, b in screen.active_bindings.items())
        except Exception:  # noqa: BLE001 - unknown Textual internals: behave like Footer
            sig = None
        if sig is not None and sig == self._signature and self._bindings_ready:
            return None
        self._signature = sig
        return super().bindings_changed(screen)
