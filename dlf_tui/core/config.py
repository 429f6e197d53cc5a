"""A run's configuration read from TOML, ``--set`` flags and live edits, checked, written back.

The sections themselves (frozen dataclasses) are in ``sections.py`` and are
re-exported here (``config.Config``, ``config.ModelConfig`` …).  A sweep's grid
axes (``Axis``, ``parse_axis``) are checked here too: ``[sweep] grid`` entries are
values like any other.  No torch here: the CLI and the UI import this module.
Every refusal is a ``ConfigError`` whose message is one line naming the source
(file or flag) and the key, e.g. ``presets/x.toml: schedule.amplitude = 0.5: must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin

from dlf_tui.core import entries
from dlf_tui.core.errors import ConfigError, first_line, printable  # noqa: F401 - config.printable
from dlf_tui.core.sections import (  # noqa: F401 - the sections are used as config.X too
    SECTIONS,
    TOP_KEYS,
    Config,
    DataConfig,
    DiagnosticsConfig,
    ForkConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    SweepConfig,
    type_of,
)


def _field(section: str, key: str) -> dataclasses.Field:
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"unknown section [{printable(section)}] (sections: {', '.join(SECTIONS)})")
    for f in fields(cls):
        if f.name == key:
            return f
    known = ", ".join(f.name for f in fields(cls))
    raise ConfigError(f"unknown key {printable(section)}.{printable(key)} (known: {known})")


def _type_name(tp: Any) -> str:
    if tp is dict:
        return "a table"
    if get_origin(tp) is tuple:
        return "a list of strings" if get_args(tp)[0] is str else "a list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def coerce(section: str, key: str, value: Any) -> Any:
    """Type-check ``value`` (already parsed from TOML/JSON) for ``section.key``."""
    tp = type_of(section, key)
    bad = ConfigError(f"{section}.{key} = {_show(value)}: must be {_type_name(tp)}")
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return _plain_table(f"{section}.{key}", value)
    if get_origin(tp) is tuple:
        item = get_args(tp)[0]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        ):
            raise bad
        if item is str:
            for v in value:
                _check_text(f"{section}.{key}", v)
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{section}.{key} = {_show(value)}: must be a finite number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{section}.{key} = {_show(value)}: must be a finite number")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        _check_text(f"{section}.{key}", value)
        return value
    raise AssertionError(tp)  # pragma: no cover


def _show(value: Any) -> str:
    """A short one-line rendering of a user's value (any type TOML/JSON can make)."""
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        text = "a huge integer"
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            text = f"<{type(value).__name__}>"
    text = printable(text)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_text(where: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: not valid UTF-8 text") from None
    if len(value) > 10_000:
        raise ConfigError(f"{where}: longer than 10000 characters")


ARGS_DEPTH = 8  # nesting a [model.args] / [data.args] table may have


def _plain_table(where: str, value: Any, depth: int = 0) -> Any:
    """A copy of a table of TOML values (strings, numbers, booleans, lists, tables)."""
    if depth > ARGS_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {ARGS_DEPTH} levels")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings")
            _check_text(where, k)
            out[k] = _plain_table(f"{where}.{k}", v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_table(where, v, depth + 1) for v in value]
    if isinstance(value, str):
        _check_text(where, value)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} = {_show(value)}: must be a finite number")
    if isinstance(value, (bool, int, float)):
        return value
    raise ConfigError(f"{where} = {_show(value)}: must be a string, number, boolean, list or table")


def check_value(section: str, key: str, value: Any) -> Any:
    """Coerce and range-check one value; returns the clean value."""
    f = _field(section, key)
    value = coerce(section, key, value)
    rule = f.metadata.get("check")
    if not rule:
        return value
    where = f"{section}.{key} = {_show(value)}"
    if rule.startswith("entry:"):  # a built-in name or the user's own entry (core/entries.py)
        role, _, builtins = rule[len("entry:"):].partition(":")
        why = entries.check(value, role, tuple(builtins.split(",")))
        if why:
            raise ConfigError(f"{where}: {why}")
    elif rule == "table":
        pass  # coerce checked it
    elif rule.startswith("choice:"):
        choices = rule[len("choice:"):].split(",")
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(choices)}")
    elif rule == "device":
        ok = value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit()
        )
        if not ok:
            raise ConfigError(f"{where}: must be auto, cpu, cuda or cuda:N")
    elif rule == "widths>=1":
        if len(value) == 0 or any(v < 1 or v > 1_000_000 for v in value):
            raise ConfigError(f"{where}: must be a non-empty list of widths between 1 and 1000000")
    elif rule == "grid":  # a grid entry is an axis, checked like `sweep --set`
        for item in value:
            parse_axis(item, f"{section}.{key}")
    elif rule == "[0,1)":
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{where}: must be >= 0 and < 1")
    elif rule[0] in "<>":
        for part in rule.split(","):  # e.g. ">=1,<=1e6"
            op, bound = (part[:2], part[2:]) if part[1] == "=" else (part[:1], part[1:])
            b = float(bound)
            ok = {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[op]
            if not ok:
                raise ConfigError(f"{where}: must be {op} {bound}")
        if isinstance(value, int) and abs(value) > 2**62:
            raise ConfigError(f"{where}: too large")
    else:  # pragma: no cover
        raise AssertionError(rule)
    return value


def check_whole(cfg: Config) -> None:
    """Rules that involve more than one key."""
    # image sets know their size only once loaded (data.load checks the batch there)
    if cfg.data.name == "spiral" and cfg.data.batch_size > cfg.data.points_per_class * cfg.data.classes:
        raise ConfigError(
            f"data.batch_size = {cfg.data.batch_size}: larger than the data set "
            f"({cfg.data.points_per_class * cfg.data.classes} points)"
        )
    if cfg.optim.name == "gd" and cfg.optim.momentum:
        raise ConfigError("optim.momentum: plain gradient descent (optim.name = \"gd\") has no momentum; use \"sgd\"")


def from_dict(doc: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a parsed TOML document; errors are prefixed by ``source``."""
    try:
        if not isinstance(doc, dict):
            raise ConfigError("must be a TOML table")
        top: dict[str, Any] = {}
        sections: dict[str, Any] = {}
        for key, value in doc.items():
            if key in TOP_KEYS:
                if not isinstance(value, str):
                    raise ConfigError(f"{key} = {_show(value)}: must be a string")
                _check_text(key, value)
                top[key] = value
            elif key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"[{key}] must be a table")
                clean = {}
                for k, v in value.items():
                    clean[k] = check_value(key, k, v)
                sections[key] = SECTIONS[key](**clean)
            else:
                raise ConfigError(
                    f"unknown key {printable(repr(key))} (expected name, description or sections "
                    f"{', '.join('[' + s + ']' for s in SECTIONS)})"
                )
        cfg = Config(**top, **sections)
        check_whole(cfg)
        return cfg
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load(path: str | Path) -> Config:
    """A config file; its entries' relative paths (``./model.py:build``) are taken
    relative to the file's directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return resolve_entries(loads(text, str(path)), path.resolve().parent)


def resolve_entries(cfg: Config, base: Path) -> Config:
    """``cfg`` with relative file entries of model.kind and data.name made absolute
    against ``base``."""
    kind, name = entries.resolve(cfg.model.kind, base), entries.resolve(cfg.data.name, base)
    if (kind, name) == (cfg.model.kind, cfg.data.name):
        return cfg
    return replace(cfg, model=replace(cfg.model, kind=kind), data=replace(cfg.data, name=name))


def loads(text: str, source: str = "config") -> Config:
    try:
        doc = tomllib.loads(text)
    except (ValueError, RecursionError) as err:  # TOMLDecodeError, huge ints, deep nesting
        msg = first_line(err) or type(err).__name__
        raise ConfigError(f"{source}: invalid TOML: {printable(msg)[:120]}") from None
    return from_dict(doc, source)


def parse_scalar(text: str) -> Any:
    """Parse a value written on the command line: TOML syntax, or a bare word as a string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (ValueError, RecursionError):  # not TOML: a bare word, or too big/deep
        pass
    if "," in text:  # 100,100 -> [100, 100]
        try:
            return tomllib.loads(f"v = [{text}]")["v"]
        except (ValueError, RecursionError):
            pass
    return text


def split_assignment(item: str, source: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"{source} {item!r}: expected KEY=VALUE")
    key, _, value = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"{source} {item!r}: empty key")
    return key, value


def apply_overrides(cfg: Config, items: list[str] | tuple[str, ...], source: str = "--set") -> Config:
    """Apply ``section.key=value`` overrides, type- and range-checked."""
    for item in items:
        key, raw = split_assignment(item, source)
        try:
            if key in TOP_KEYS:
                _check_text(key, raw)
                cfg = replace(cfg, **{key: raw})
                continue
            section, dot, name = key.partition(".")
            if not dot or not name:
                raise ConfigError(f"{key}: expected section.key (e.g. schedule.amplitude)")
            if section == "fork":
                raise ConfigError(f"{key}: [fork] is written by `dlf-tui fork`, not set")
            name, dot, arg = name.partition(".")
            value = parse_scalar(raw)
            if dot:  # model.args.depth=3: one key of an args table
                if name != "args" or not arg:
                    raise ConfigError(f"{key}: only the args tables have keys below them "
                                      f"(e.g. model.args.depth)")
                value = {**getattr(getattr(cfg, section, None), "args", {}), arg: value}
            value = check_value(section, name, value)
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
            cfg = resolve_entries(cfg, Path.cwd())  # --set paths are relative to here
        except ConfigError as err:
            raise ConfigError(f"{source} {printable(item)[:80]}: {err}") from None
    try:  # once all are in: the order of the items does not matter
        check_whole(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


# ---------------------------------------------------------------------------
# Grid axes: ``section.key=v1,v2,...`` (``[sweep] grid`` entries, ``sweep --set``)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    key: str  # section.key
    values: tuple

    @property
    def short(self) -> str:
        return self.key.rpartition(".")[2]


def split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: ``[16,16],[32]`` → two parts."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_axis(item: str, source: str = "--set") -> Axis:
    """``section.key=v1,v2,...`` → an Axis of checked values (one line on refusal).

    For a list-valued key (model.hidden) each comma-separated value is one
    alternative: ``model.hidden=16,32`` sweeps one hidden layer of 16 and of 32;
    ``model.hidden=[16,16],[32,32]`` sweeps two-layer widths."""
    key, raw = split_assignment(item, source)
    where = f"{source} {printable(item)[:80]}"
    section, dot, name = key.partition(".")
    if not dot or not name or section not in SECTIONS or section in ("sweep", "fork"):
        raise ConfigError(f"{where}: expected section.key of "
                          f"{', '.join('[' + s + ']' for s in SECTIONS if s not in ('sweep', 'fork'))}")
    if key == "run.seed":
        raise ConfigError(f"{where}: seeds are not an axis: use --seeds N (run.seed is the first)")
    values = []
    try:
        listed = get_origin(type_of(section, name)) is tuple
        for part in split_top(raw):
            if not part:
                raise ConfigError(f"{key}: empty value in {printable(raw)[:40]!r}")
            v = parse_scalar(part)
            if listed and isinstance(v, int) and not isinstance(v, bool):
                v = [v]
            values.append(check_value(section, name, v))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"{where}: a value is listed twice")
    return Axis(key, tuple(values))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # TOML basic strings also forbid DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))  # pragma: no cover


def to_dict(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(cfg, k) for k in TOP_KEYS}
    for section in SECTIONS:
        out[section] = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(getattr(cfg, section)).items()
        }
    return out


def to_toml(cfg: Config) -> str:
    """The fully resolved config as TOML (round-trips through ``loads``)."""
    lines = [f"{k} = {_toml_value(getattr(cfg, k))}" for k in TOP_KEYS]
    for section in SECTIONS:
        lines.append("")
        lines.append(f"[{section}]")
        for f in fields(SECTIONS[section]):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(cfg, section), f.name))}")
    return "\n".join(lines) + "\n"


# Parameters a running engine accepts in a ``set`` command, and the config key behind each.
LIVE_PARAMS: dict[str, tuple[str, str]] = {
    "amplitude": ("schedule", "amplitude"),
    "period": ("schedule", "period"),
    "lr": ("optim", "lr"),
    "pace": ("run", "pace"),
    "diagnostics": ("diagnostics", "enabled"),
    "diagnostics_every": ("diagnostics", "every"),
    "ntk_every": ("diagnostics", "ntk_every"),
}


def check_live(name: str, value: Any) -> Any:
    """Validate one live edit (``set amplitude=30``) with the config's own rules."""
    if name not in LIVE_PARAMS:
        raise ConfigError(f"unknown parameter {name!r} (settable: {', '.join(LIVE_PARAMS)})")
    section, key = LIVE_PARAMS[name]
    try:
        return check_value(section, key, value)
    except ConfigError as err:
        raise ConfigError(f"{name}: {str(err).split(': ', 1)[-1]}") from None
