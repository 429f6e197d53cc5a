"""The keys a screen offers right now, for ``?`` (``screens/help.py``) and the
command palette (``DlfApp.get_system_commands``), read from the screen's
active bindings: so both follow ``keys.toml`` (Textual keymaps) and
``check_action`` (a read-only run offers no steering), and the footer, ``?``
and the palette can never disagree.

Only the bindings of ``keys.py`` (those with an id) are listed; one row per
action, with all its keys.  A tooltip ``"Title: what it does"`` becomes the
palette entry's title and help line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.binding import Binding
    from textual.dom import DOMNode
    from textual.screen import Screen


@dataclass
class KeyRow:
    node: "DOMNode"  # the namespace the action runs in
    binding: "Binding"  # the first of its bindings (description, action, id)
    keys: list[str] = field(default_factory=list)  # as the footer writes them
    enabled: bool = True  # False: shown dimmed, does nothing now (check_action said None)
    tooltip: str = ""

    @property
    def title(self) -> str:
        return self.tooltip.partition(": ")[0] or self.binding.description

    @property
    def detail(self) -> str:
        return self.tooltip.partition(": ")[2]

    @property
    def key_text(self) -> str:
        return " / ".join(self.keys)


def key_rows(screen: "Screen") -> list[KeyRow]:
    """The screen's active bindings that have an id, one row per action (in the
    screen's order, then the app's)."""
    app = screen.app
    rows: dict[tuple[int, str], KeyRow] = {}
    named: set[tuple[int, str]] = set()
    for key, active in screen.active_bindings.items():
        b, node = active.binding, active.node
        group = (id(node), b.action)
        row = rows.get(group)
        if row is None:
            row = rows[group] = KeyRow(node, b, enabled=active.enabled)
        if b.id:
            named.add(group)
            if not row.binding.id:
                row.binding = b
        row.tooltip = row.tooltip or b.tooltip
        display = app.get_key_display(b)
        if display not in row.keys:
            row.keys.append(display)
    return [r for g, r in rows.items() if g in named]
