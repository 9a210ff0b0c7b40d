"""What a config key is besides its type: its range check, its kind and when it was added (``key``), and the
checks derived from that (``check_value`` for types, ``check_ranges`` for ranges, ``missing_keys`` for run
configs written before a key existed, ``keys_of_kind`` for the runtime and architecture sets).

Each field of :mod:`lowres.config` is declared once, with :func:`key`, and every list of key names is derived
from those declarations: forgetting a hand-kept list had broken resuming once. Every failure is a
:class:`ConfigError` naming the key, because a silently accepted bad value costs a whole run.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: config.py imports this module
    from .config import Config

__all__ = ["ConfigError", "key", "Range", "POSITIVE", "UNIT", "NON_NEGATIVE", "ARCHITECTURE", "RECIPE", "RUNTIME",
           "check_value", "check_ranges", "missing_keys", "keys_of_kind", "added_keys", "field_meta"]

ARCHITECTURE = "architecture"  # what the weights are: a resume must keep it (another stem or width is another net)
RECIPE = "recipe"  # what is learnt, and from what: two runs that differ here are different runs
RUNTIME = "runtime"  # where and how fast, how it is watched and kept: never what is learnt (a bench run is reused)
_KINDS = (ARCHITECTURE, RECIPE, RUNTIME)
_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Range:
    """A value's allowed range, said as ``'KEY' must be TEXT``: ``low``/``high`` bounds (None: open-ended),
    ``low_open``: the low bound itself is excluded. ``None`` values (optional keys) always pass."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    text: str = ""

    def ok(self, value: Any) -> bool:
        if value is None:
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


POSITIVE = Range(0, low_open=True, text="> 0")
UNIT = Range(0, 1, text="in [0, 1]")
NON_NEGATIVE = Range(0, text=">= 0")


def key(default: Any = _NO_DEFAULT, *, factory: Any = None, kind: str = RECIPE, check: Range | None = None,
        added: str | None = None) -> Any:
    """A config field with what else it is: ``kind`` (:data:`ARCHITECTURE`, :data:`RECIPE`, :data:`RUNTIME`),
    ``check`` (its :class:`Range`), ``added`` (the code date that added it: run configs written before it
    lack the key, and its default is what those runs did, so resuming one does not call it truncated)."""
    assert kind in _KINDS, kind
    meta = {"kind": kind, "check": check, "added": added}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_meta(section_cls: type) -> dict[str, dict[str, Any]]:
    """``{field name: metadata}`` of one config section (``kind`` recipe when a field declares none)."""
    return {f.name: {"kind": RECIPE, "check": None, "added": None, **f.metadata}
            for f in dataclasses.fields(section_cls)}


def _all_meta(config_cls: type) -> dict[str, dict[str, Any]]:
    hints = typing.get_type_hints(config_cls)
    return {f"{section.name}.{name}": meta for section in dataclasses.fields(config_cls)
            for name, meta in field_meta(hints[section.name]).items()}


def keys_of_kind(config_cls: type, kind: str) -> tuple[str, ...]:
    """The dotted keys of one kind in declaration order, e.g. the runtime keys a bench run is reused across."""
    return tuple(k for k, meta in _all_meta(config_cls).items() if meta["kind"] == kind)


def added_keys(config_cls: type) -> frozenset[str]:
    """Keys newer than some written run configs (they declare ``added``)."""
    return frozenset(k for k, meta in _all_meta(config_cls).items() if meta["added"])


def missing_keys(raw: Any, config_cls: type) -> list[str]:
    """Keys of a full config that ``raw`` lacks, but for :func:`added_keys`: a resolved config.yaml has them
    all, so any missing one means the file was truncated or hand-edited (and would otherwise silently fall
    back to defaults)."""
    raw = raw if isinstance(raw, dict) else {}
    newer = added_keys(config_cls)
    return [k for k in _all_meta(config_cls) if k not in newer
            and (not isinstance(raw.get(k.split(".")[0]), dict) or k.split(".")[1] not in raw[k.split(".")[0]])]


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_value(key: str, value: Any, hint: Any, source: str) -> Any:
    """Return ``value`` converted to ``hint`` when that is lossless, else raise naming the key."""
    origin = typing.get_origin(hint)
    if origin is Union:
        for arg in typing.get_args(hint):
            try:
                return check_value(key, value, arg, source)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: '{key}' expects {_type_name(hint)}, got {type(value).__name__} {value!r}")


def _non_finite(node: Any, prefix: str = "") -> str | None:
    """The first float field that is NaN or infinite (they pass every ``<``/``>`` check), else None."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            found = _non_finite(value, f"{prefix}{f.name}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{f.name}"
    return None


def check_ranges(cfg: Config, source: str) -> None:
    """Value checks the types cannot express: finite numbers, each key's :class:`Range` (declared with it), and
    the few rules between two keys."""
    key_name = _non_finite(cfg)
    if key_name:
        raise ConfigError(f"{source}: '{key_name}' must be a finite number, got {_get_field(cfg, key_name)!r}")
    for name, meta in _all_meta(type(cfg)).items():
        check, value = meta["check"], _get_field(cfg, name)
        if check is not None and not check.ok(value):
            raise ConfigError(f"{source}: '{name}' must be {check.text}, got {value!r}")
    a, d = cfg.augment, cfg.data
    if not a.area_min <= a.area_max:
        raise ConfigError(f"{source}: need augment.area_min <= augment.area_max, got {a.area_min} and {a.area_max}")
    if not d.iou_background <= d.iou_positive:  # the bridge's MatchParams rule
        raise ConfigError(f"{source}: need 0 <= data.iou_background <= data.iou_positive <= 1, got "
                          f"{d.iou_background} and {d.iou_positive}")
    for low, high in (("box_scale_min", "box_scale_max"), ("aspect_min", "aspect_max")):
        if getattr(a, low) > getattr(a, high):
            raise ConfigError(f"{source}: 'augment.{low}' must be <= 'augment.{high}'")


def _get_field(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)
