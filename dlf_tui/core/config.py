"""A run's configuration: frozen, typed dataclasses read from TOML.

No torch here: the CLI and the UI import this module.  Every refusal is a
``ConfigError`` whose message is one line naming the source (file or flag)
and the key, e.g. ``presets/x.toml: schedule.amplitude = 0.5: must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from dlf_tui.core.errors import ConfigError




# ---------------------------------------------------------------------------
# Sections.  ``metadata["check"]`` holds the range rule shared by files,
# ``--set`` flags and live ``set`` commands (see ``check_value``).
# ---------------------------------------------------------------------------


def _f(default: Any, check: str | None = None, help: str = "") -> Any:
    kw: dict[str, Any] = {"metadata": {"check": check, "help": help}}
    if isinstance(default, (list, tuple)):
        kw["default_factory"] = lambda d=tuple(default): d
    else:
        kw["default"] = default
    return field(**kw)


@dataclass(frozen=True)
class DataConfig:
    name: str = _f("spiral", "choice:spiral,cifar10,cifar100,mnist,fashion-mnist", "data set")
    points_per_class: int = _f(100, ">=1", "spiral points per class")
    classes: int = _f(3, ">=2", "number of classes (spiral arms; image sets have their own)")
    turns: float = _f(2.0, ">0", "spiral arm length in full turns (2 = 4*pi)")
    noise: float = _f(0.2, ">=0", "std of the angle noise")
    seed: int = _f(0, ">=0", "data seed: the spiral's numpy legacy seed; the image subsets' and held-out split's seed")
    val_seed: int = _f(-1, ">=-1", "numpy seed of a held-out spiral (-1 = none)")
    val_points_per_class: int = _f(0, ">=0", "held-out points per class (0 = same as training)")
    eval_every: int = _f(100, ">=1", "evaluate the held-out set every N updates")
    batch_size: int = _f(0, ">=0", "mini-batch size (0 = full batch)")
    root: str = _f("~/.cache/dlf-tui/data", None, "image data: torchvision's root directory (~ expanded)")
    download: bool = _f(False, None, "image data: download the files into data.root when missing")
    verify: bool = _f(True, None, "image data: check the CIFAR files' md5 sums (torchvision's integrity check)")
    val_split: str = _f("test", "choice:test,holdout,none", "image data: held-out set = the official test set, a held-out part of train, or none")
    val_fraction: float = _f(0.1, "[0,1)", "image data, val_split = holdout: fraction of each class held out of train")
    subset_per_class: int = _f(0, ">=0", "image data: training images per class (0 = all), drawn with data.seed")
    val_subset_per_class: int = _f(0, ">=0", "image data: held-out images per class (0 = all), drawn with data.seed")
    augment: str = _f("auto", "choice:auto,none,flip,crop,crop-flip", "image data: on-device augmentation per step (auto = crop-flip for CIFAR, none for MNIST)")
    crop_padding: int = _f(4, ">=0", "image data: zero padding of the random crop, in pixels")
    eval_batch_size: int = _f(1000, ">=1", "evaluate the held-out set in batches of N samples")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _f("mlp", "choice:mlp,myrtle5,myrtle7,myrtle10,resnet18", "model family (mlp flattens image inputs)")
    hidden: tuple[int, ...] = _f((100,), "widths>=1", "hidden layer widths (mlp)")
    activation: str = _f("relu", "choice:relu", "hidden activation")
    init: str = _f("glorot", "choice:glorot,torch,he", "glorot = the reference's truncated-normal Glorot; torch = PyTorch default; he = N(0, 2/fan_in), zero biases")
    width: int = _f(128, ">=1", "channels of every conv layer (myrtle5/7/10)")


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = _f("triangle", "choice:triangle,sine,square,static", "shape of the oscillation")
    amplitude: float = _f(70.0, ">=1,<=1e6", "peak raw weight A of the emphasised class (1 = plain CE)")
    period: int = _f(5000, ">=1", "period T (a period is T+1 updates)")
    last_period_static: bool = _f(True, None, "switch to A=1 at the first period boundary after step > steps - T")


@dataclass(frozen=True)
class OptimConfig:
    name: str = _f("gd", "choice:gd,sgd,adam", "gd = plain gradient descent")
    lr: float = _f(1.0, ">0", "learning rate")
    momentum: float = _f(0.0, "[0,1)", "SGD momentum")
    weight_decay: float = _f(0.0, ">=0", "L2 weight decay")


@dataclass(frozen=True)
class RunConfig:
    steps: int = _f(70000, ">=1", "number of updates")
    seed: int = _f(0, ">=0", "torch seed of the initial weights and batches")
    dtype: str = _f("float64", "choice:float32,float64", "floating point type")
    device: str = _f("auto", "device", "auto, cpu, cuda or cuda:N")
    threads: int = _f(1, ">=0", "torch CPU threads (0 = torch default)")
    flush_every: int = _f(2048, ">=1", "flush metrics at least every N updates")
    flush_seconds: float = _f(0.1, ">0", "... or every S seconds, whichever is first")
    checkpoint_every: int = _f(0, ">=0", "periodic checkpoint every N updates (0 = off)")
    fused: bool = _f(True, None, "use the hand-fused full-batch GD step when it applies")
    amp: str = _f("off", "choice:off,bf16", "autocast the forward pass to bfloat16 (autograd stepper)")
    channels_last: bool = _f(False, None, "conv models: channels-last memory format")
    compile: bool = _f(False, None, "torch.compile the model's step (autograd stepper; first updates are slow)")


@dataclass(frozen=True)
class DiagnosticsConfig:
    enabled: bool = _f(False, None, "compute the Hessian's top eigenvalue during training")
    every: int = _f(501, ">=1", "Hessian λ_max every N updates (keep it odd: past 2/η GD oscillates with period 2)")
    iters: int = _f(20, ">=1", "Lanczos iterations (at most)")
    k: int = _f(1, ">=1", "how many top eigenvalues")
    ntk_every: int = _f(0, ">=0", "NTK λ_max every N updates (0 = off)")
    ntk_size: int = _f(100, ">=1", "samples in the fixed NTK subset")


@dataclass(frozen=True)
class SweepConfig:
    """Read by ``dlf-tui sweep`` only; a single run ignores it (see ``sweeps.py``)."""

    grid: tuple[str, ...] = _f((), "grid", "axes: \"section.key=v1,v2,...\" each; members are their cross product × seeds")
    seeds: int = _f(1, ">=1,<=4096", "seeds per cell: run.seed, run.seed+1, ...")
    threshold: float = _f(0.95, ">0,<=1", "summary: fraction of seeds whose final accuracy is >= this")


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "schedule": ScheduleConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "diagnostics": DiagnosticsConfig,
    "sweep": SweepConfig,
}
TOP_KEYS = ("name", "description")


def _field(section: str, key: str) -> dataclasses.Field:
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"unknown section [{printable(section)}] (sections: {', '.join(SECTIONS)})")
    for f in fields(cls):
        if f.name == key:
            return f
    known = ", ".join(f.name for f in fields(cls))
    raise ConfigError(f"unknown key {printable(section)}.{printable(key)} (known: {known})")


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return get_type_hints(SECTIONS[section])  # slow (evaluates annotations): once per section


def _type_of(section: str, key: str) -> Any:
    return _hints(section)[key]


def _type_name(tp: Any) -> str:
    if get_origin(tp) is tuple:
        return "a list of strings" if get_args(tp)[0] is str else "a list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def coerce(section: str, key: str, value: Any) -> Any:
    """Type-check ``value`` (already parsed from TOML/JSON) for ``section.key``."""
    tp = _type_of(section, key)
    bad = ConfigError(f"{section}.{key} = {_show(value)}: must be {_type_name(tp)}")
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


def printable(text: str) -> str:
    """``text`` with newlines and other non-printable characters escaped, so an
    error about user input always stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def check_value(section: str, key: str, value: Any) -> Any:
    """Coerce and range-check one value; returns the clean value."""
    f = _field(section, key)
    value = coerce(section, key, value)
    rule = f.metadata.get("check")
    if not rule:
        return value
    where = f"{section}.{key} = {_show(value)}"
    if rule.startswith("choice:"):
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
    elif rule == "grid":
        from dlf_tui.store.sweep import parse_axis  # a grid entry is an axis, checked like `sweep --set`

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


def _check_whole(cfg: Config) -> None:
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
        _check_whole(cfg)
        return cfg
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return loads(text, str(path))


def loads(text: str, source: str = "config") -> Config:
    try:
        doc = tomllib.loads(text)
    except (ValueError, RecursionError) as err:  # TOMLDecodeError, huge ints, deep nesting
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
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
            value = check_value(section, name, parse_scalar(raw))
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
            _check_whole(cfg)
        except ConfigError as err:
            raise ConfigError(f"{source} {printable(item)[:80]}: {err}") from None
    return cfg


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
