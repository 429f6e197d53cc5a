"""Find presets: ``--presets-dir``, then ``~/.config/dlf-tui/presets``, then the shipped ones.

A preset is a TOML run config; its name is the file name without ``.toml``.
Earlier directories shadow later ones, so a user can override a shipped preset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from dlf_tui.core import config
from dlf_tui.core.errors import ConfigError

SHIPPED_DIRS = (
    Path(__file__).resolve().parent / "presets",  # inside an installed wheel
    Path(__file__).resolve().parent.parent / "presets",  # a source checkout
)


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dlf-tui" / "presets"


def shipped_dir() -> Path:
    for d in SHIPPED_DIRS:
        if d.is_dir() and any(d.glob("*.toml")):
            return d
    return SHIPPED_DIRS[-1]


def search_path(presets_dir: Path | None = None) -> list[tuple[str, Path]]:
    dirs = []
    if presets_dir is not None:
        dirs.append(("custom", Path(presets_dir)))
    dirs.append(("user", user_dir()))
    dirs.append(("shipped", shipped_dir()))
    return dirs


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    origin: str  # custom | user | shipped

    def load(self) -> config.Config:
        cfg = config.load(self.path)
        if cfg.name in ("custom", ""):
            cfg = replace(cfg, name=self.name)
        return cfg

    def description(self) -> str:
        try:
            return self.load().description
        except ConfigError as err:
            return f"(invalid: {err})"


def discover(presets_dir: Path | None = None) -> list[Preset]:
    if presets_dir is not None and not Path(presets_dir).is_dir():
        raise ConfigError(f"--presets-dir {presets_dir}: no such directory")
    seen: dict[str, Preset] = {}
    for origin, d in search_path(presets_dir):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.toml")):
            seen.setdefault(p.stem, Preset(p.stem, p, origin))
    return sorted(seen.values(), key=lambda p: (p.origin != "shipped", p.name))


def find(spec: str, presets_dir: Path | None = None) -> config.Config:
    """A preset name, or a path to a TOML file, resolved to a Config."""
    path = Path(spec)
    if spec.endswith(".toml") or path.is_file():
        cfg = config.load(path)
        return replace(cfg, name=path.stem) if cfg.name in ("custom", "") else cfg
    for p in discover(presets_dir):
        if p.name == spec:
            return p.load()
    names = ", ".join(p.name for p in discover(presets_dir)) or "none found"
    raise ConfigError(f"unknown preset {spec!r} (presets: {names})")
