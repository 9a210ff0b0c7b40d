"""Value checks of a training config: types (``check_value``) and ranges (``check_ranges``).

Kept apart from :mod:`lowres.config` (the dataclasses, presets and YAML) so each reads in one sitting; every
failure is a :class:`ConfigError` naming the key, because a silently accepted bad value costs a whole run.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:  # annotations only: config.py imports this module
    from .config import Config

__all__ = ["ConfigError", "check_value", "check_ranges", "missing_keys", "ADDED_KEYS"]

# Keys added after run folders were first written: a resolved config.yaml from before them lacks them, and their
# defaults reproduce what such a run did, so resuming it must not call the file truncated: the bridge's matching
# and jitter options (reachable from Python only before), how crops are stored and built (auto = raw for small
# data, as before; one thread), how a run is watched and kept (log lines, TensorBoard, epoch checkpoints: no
# effect on the weights) and compilation (off); and fine-tuning's options (no background copies, one lr, running
# batch-norm statistics: what every earlier run did).
ADDED_KEYS = frozenset({"data.iou_positive", "data.iou_background", "data.score_threshold", "data.top_k",
                        "data.jitter", "data.jitter_iou", "data.crop_storage", "data.build_workers",
                        "train.keep_checkpoints", "train.log_every", "train.tensorboard", "train.compile",
                        "data.background_copies", "optim.trunk_lr_factor", "train.bn_stats"})


class ConfigError(ValueError):
    """A config key is unknown or its value has the wrong type or range (the message names the key)."""


def missing_keys(raw: Any, defaults: dict[str, dict[str, Any]]) -> list[str]:
    """Keys of a full config (``defaults``) that ``raw`` lacks, but for :data:`ADDED_KEYS`: a resolved config.yaml
    has them all, so any missing one means the file was truncated or hand-edited (and would otherwise silently
    fall back to defaults)."""
    raw = raw if isinstance(raw, dict) else {}
    return [f"{name}.{key}" for name, section in defaults.items() for key in section
            if f"{name}.{key}" not in ADDED_KEYS and (not isinstance(raw.get(name), dict) or key not in raw[name])]


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
    """Value checks the types cannot express: finite numbers, positive sizes, probabilities in [0, 1]."""
    key = _non_finite(cfg)
    if key:
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {_get_field(cfg, key)!r}")
    m, o, s, t, a = cfg.model, cfg.optim, cfg.schedule, cfg.train, cfg.augment
    positive = {"model.width": m.width, "train.epochs": t.epochs, "train.batch_size": t.batch_size,
                "eval.batch_size": cfg.eval.batch_size, "optim.lr": o.lr, "schedule.decay_epochs": s.decay_epochs,
                "eval.every": cfg.eval.every, "model.min_depth": m.min_depth, "eval.bootstrap": cfg.eval.bootstrap,
                "crop.context": cfg.crop.context, "augment.box_scale_min": a.box_scale_min,
                "augment.aspect_min": a.aspect_min, "schedule.decay_rate": s.decay_rate, "optim.eps": o.eps,
                "optim.clip_grad_norm": o.clip_grad_norm, "train.threads": t.threads,
                "train.max_steps_per_epoch": t.max_steps_per_epoch, "data.max_train": cfg.data.max_train,
                "data.max_val": cfg.data.max_val, "data.top_k": cfg.data.top_k, "data.jitter_iou": cfg.data.jitter_iou,
                "optim.trunk_lr_factor": o.trunk_lr_factor}
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{source}: '{key}' must be > 0, got {value!r}")
    unit = {"train.label_smoothing": t.label_smoothing, "train.ema_decay": t.ema_decay, "model.dropout": m.dropout,
            "optim.rms_decay": o.rms_decay, "optim.momentum": o.momentum, "optim.beta2": o.beta2, "eval.ci": cfg.eval.ci,
            "augment.hflip": a.hflip, "augment.p_color": a.p_color, "schedule.warmup_start": s.warmup_start,
            "schedule.min_lr_factor": s.min_lr_factor, "augment.hue": a.hue, "data.jitter_iou": cfg.data.jitter_iou}
    for key, value in unit.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{source}: '{key}' must be in [0, 1], got {value!r}")
    non_negative = {"train.checkpoint_every": t.checkpoint_every, "data.num_workers": cfg.data.num_workers,
                    "optim.weight_decay": o.weight_decay, "train.aux_weight": t.aux_weight,
                    "schedule.warmup_epochs": s.warmup_epochs, "crop.margin": cfg.crop.margin,
                    "augment.color": a.color, "data.min_size": cfg.data.min_size, "data.jitter": cfg.data.jitter,
                    "data.background_copies": cfg.data.background_copies}
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{source}: '{key}' must be >= 0, got {value!r}")
    if not (0.0 < cfg.augment.area_min <= cfg.augment.area_max <= 1.0 and 0.0 < cfg.crop.central_fraction <= 1.0
            and cfg.data.decode_cache_gb >= 0.0):
        raise ConfigError(f"{source}: need 0 < augment.area_min <= augment.area_max <= 1, 0 < crop.central_fraction"
                          f" <= 1 and data.decode_cache_gb >= 0")
    for key, value in {"crop.size": cfg.crop.size, "crop.upsample_to": cfg.crop.upsample_to}.items():
        if value is not None and value < 8:
            raise ConfigError(f"{source}: '{key}' must be null or >= 8 pixels, got {value!r}")
    if cfg.train.keep_checkpoints < 0:
        raise ConfigError(f"{source}: 'train.keep_checkpoints' must be >= 0, got {cfg.train.keep_checkpoints!r}")
    if cfg.train.log_every < 1:
        raise ConfigError(f"{source}: 'train.log_every' must be >= 1, got {cfg.train.log_every!r}")
    if not 0.0 <= cfg.data.iou_background <= cfg.data.iou_positive <= 1.0:  # the bridge's MatchParams rule
        raise ConfigError(f"{source}: need 0 <= data.iou_background <= data.iou_positive <= 1, got "
                          f"{cfg.data.iou_background} and {cfg.data.iou_positive}")
    for low, high in (("box_scale_min", "box_scale_max"), ("aspect_min", "aspect_max")):
        if getattr(a, low) > getattr(a, high):
            raise ConfigError(f"{source}: 'augment.{low}' must be <= 'augment.{high}'")


def _get_field(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)

