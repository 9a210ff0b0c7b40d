"""Training and evaluation configuration: dataclasses in, YAML presets, flag overrides, resolved YAML out.

Precedence is defaults < YAML file < flags (``--set key=value``, then dedicated flags such as ``--stem``),
as in timm. A YAML file may start from another (``base: NAME``, a preset or a path relative to the file; as
detectron2's ``_BASE_``, mmcv's ``_base_``), so each preset states only how it differs from its base.
Every field is typed and checked: an unknown key or a value of the wrong type is an error that names the
key, because a silently ignored typo in a training config costs a whole run. The resolved config is plain
data (``Config.to_dict()``), so it can be written next to the outputs and stored in checkpoints that load
with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ._atomic import atomic_write_bytes
from .config_checks import (ARCHITECTURE, NON_NEGATIVE, POSITIVE, RUNTIME, UNIT, ConfigError, Range, check_ranges,
                            check_value, key, missing_keys)

__all__ = [
    "ConfigError", "Config", "ModelConfig", "DataConfig", "CropConfig", "AugmentConfig", "OptimConfig",
    "ScheduleConfig", "TrainConfig", "EvalConfig", "load_config", "apply_overrides", "save_config",
    "preset_path", "list_presets", "default_train_config", "read_yaml", "resolve_base",
]

BASE_KEY = "base"  # a YAML config's parent: a preset name or a path relative to the file

# Each field is declared with its metadata (lowres.config_checks.key): its range check, its kind (architecture:
# a resume keeps it; runtime: where and how fast, never what is learnt; recipe: the rest) and, for keys newer
# than some written run configs, ADDED: those runs lack the key, and its default is what they did.
ADDED = "after 2026-11-22"  # the committed studies' run configs were written by the 2026-11-22 code
UNIT_OPEN = Range(0, 1, low_open=True, text="in (0, 1]")
PIXELS = Range(8, text="null or >= 8 pixels")
AT_LEAST_ONE = Range(1, text=">= 1")


@dataclass
class ModelConfig:
    stem: Literal[79, 151, 299] = key(79, kind=ARCHITECTURE)  # input size = stem variant (paper section 9, Table 2)
    # channel multiplier, TF-slim's depth_multiplier; 1.0 is the paper's network
    width: float = key(1.0, check=POSITIVE, kind=ARCHITECTURE)
    # floor on every conv's channel count (TF-slim's default)
    min_depth: int = key(16, check=POSITIVE, kind=ARCHITECTURE)
    # auxiliary head on Mixed_6e, BN-auxiliary (paper sections 4 and 10)
    aux_logits: bool = key(True, kind=ARCHITECTURE)
    dropout: float = key(0.5, check=UNIT)  # dropout before the classifier (torchvision's value)
    # start from: torchvision/timm Inception-v3 weights, a lowres checkpoint (EMA), or TF's 2015 ImageNet graph
    # (`tf-inception-v3` after `lowres weights fetch`, or its file)
    weights: Optional[str] = key(None)
    channels_last: bool = key(False)  # NHWC memory format (faster convs on recent GPUs / oneDNN)
    sync_bn: bool = key(False)  # SyncBatchNorm across DDP processes (small per-process batches)


@dataclass
class DataConfig:
    path: Optional[str] = key(None)  # COCO-layout or ImageNet-layout folder (detected); None = the synthetic set
    train_split: str = key("train")  # annotations/instances_{split}.json used for training
    val_split: str = key("val")  # split used for validation during training
    boxes: Literal["gt", "detections", "both"] = key("gt")  # ground-truth boxes, a detector's (IoU-labelled), or both
    # COCO results JSON; "{split}" in it is replaced by the split's name, a relative path not found here is looked
    # up in the data folder; None = the one DIR/detections/*_{split}.json (coco-mini has three: name one)
    detections_file: Optional[str] = key(None)
    background: bool = key(False)  # extra background class for detector boxes with IoU < 0.3 (R-CNN)
    min_size: float = key(1.0, check=NON_NEGATIVE)  # boxes with a side shorter than this (pixels) are skipped
    # a detector box with IoU >= this with an object takes its class (R-CNN's 0.5)
    iou_positive: float = key(0.5, check=UNIT, added=ADDED)
    # ... with IoU < this with every object: background (R-CNN's 0.3); between: ignored
    iou_background: float = key(0.3, check=UNIT, added=ADDED)
    # drop detector boxes scoring below this before matching; None = keep all
    score_threshold: Optional[float] = key(None, added=ADDED)
    # keep at most this many detector boxes per image, highest score first; None = all
    top_k: Optional[int] = key(None, check=POSITIVE, added=ADDED)
    # training only: add this many jittered copies of every ground-truth box (R-CNN-style)
    jitter: int = key(0, check=NON_NEGATIVE, added=ADDED)
    jitter_iou: float = key(0.7, check=UNIT_OPEN, added=ADDED)  # each copy overlaps its box with at least this IoU
    # training only: this many extra copies of every background detector box (the detector's false positives, DCR's
    # hard negatives), each augmented on its own
    background_copies: int = key(0, check=NON_NEGATIVE, added=ADDED)
    cache: bool = key(True)  # cut crops once into the on-disk crop cache instead of decoding JPEGs each epoch
    cache_dir: Optional[str] = key(None, kind=RUNTIME)  # crop cache and synthetic set location; None = ~/.cache/lowres
    # cache crops as uint8 arrays or JPEG shards (auto: raw up to 2 GiB)
    crop_storage: Literal["auto", "raw", "jpeg"] = key("auto", added=ADDED)
    # threads decoding images while a crop cache is built (per process)
    build_workers: int = key(1, check=NON_NEGATIVE, kind=RUNTIME, added=ADDED)
    # DataLoader workers (0 = main process; determinism holds either way)
    num_workers: int = key(0, check=NON_NEGATIVE, kind=RUNTIME)
    max_train: Optional[int] = key(None, check=POSITIVE)  # use only the first N training crops (smoke tests)
    max_val: Optional[int] = key(None, check=POSITIVE)  # use only the first N validation crops (smoke tests)
    synthetic_seed: int = key(0)  # seed of the generated synthetic set when no path is given
    # ImageNet layout: decode every image once into a memory-mapped store when the decoded originals take at most
    # this many GB (small data); else decode per epoch
    decode_cache_gb: float = key(8.0, check=NON_NEGATIVE)


@dataclass
class CropConfig:
    context: float = key(227 / 195, check=POSITIVE)  # box enlargement about its centre (R-CNN's 16 px at 227)
    mode: Literal["square", "warp"] = key("square")  # square keeps the aspect ratio; warp is R-CNN's
    # the cache stores this much extra context around each crop for the box jitter
    margin: float = key(0.2, check=NON_NEGATIVE)
    # crop side cut from the original pixels; None = the stem's input size
    size: Optional[int] = key(None, check=PIXELS)
    # resize crops (bilinear) to this side before the model; None = no resize
    upsample_to: Optional[int] = key(None, check=PIXELS)
    # ImageNet layout, evaluation: the central square of this fraction of the shorter side (TF's
    # central_crop(0.875); torchvision's 299/342)
    central_fraction: float = key(0.875, check=UNIT_OPEN)


@dataclass
class AugmentConfig:
    enabled: bool = key(True)  # train-time augmentation (detection_bridge.transforms); off = the eval pipeline
    # side of the sampled region relative to the context box: box jitter
    box_scale_min: float = key(0.85, check=POSITIVE)
    box_scale_max: float = key(1.15)
    aspect_min: float = key(0.75, check=POSITIVE)  # aspect-ratio jitter of that region (Inception-style, kept mild)
    aspect_max: float = key(4 / 3)
    # ImageNet layout: area fraction of the random training region (Inception's
    area_min: float = key(0.08, check=UNIT_OPEN)
    area_max: float = key(1.0, check=UNIT_OPEN)  # "distorted bounding box", torchvision's RandomResizedCrop scale)
    hflip: float = key(0.5, check=UNIT)  # horizontal flip probability
    color: float = key(0.2, check=NON_NEGATIVE)  # brightness/contrast/saturation jitter strength
    hue: float = key(0.02, check=UNIT)  # hue jitter
    p_color: float = key(0.8, check=UNIT)  # probability of colour jitter


@dataclass
class OptimConfig:
    name: Literal["rmsprop_tf", "sgd", "adamw"] = key("rmsprop_tf")  # paper section 8: RMSProp
    lr: float = key(0.045, check=POSITIVE)  # paper section 8 (for batch 32 per replica)
    rms_decay: float = key(0.9, check=UNIT)  # RMSProp's square-average decay (paper section 8)
    # None = the optimiser's own: 1.0 for rmsprop_tf (paper section 8), 1e-8 AdamW
    eps: Optional[float] = key(None, check=POSITIVE)
    momentum: float = key(0.9, check=UNIT)  # RMSProp/SGD momentum (not in the paper; TF-slim's train script)
    weight_decay: float = key(4e-5, check=NON_NEGATIVE)  # L2 on conv/fc weights only (not in the paper; TF-slim's 4e-5)
    beta2: float = key(0.999, check=UNIT)  # AdamW's second-moment decay (its beta1 is `momentum`)
    nesterov: bool = key(True)  # SGD only
    # gradient clipping threshold (paper section 8); None = off
    clip_grad_norm: Optional[float] = key(2.0, check=POSITIVE)
    clip_mode: Literal["global", "per_tensor"] = key("global")  # per_tensor = TF-slim's clip_gradient_norm
    # lr of the trunk (stem + Mixed blocks) relative to optim.lr; the new classifier and aux head keep optim.lr.
    # Below 1 when fine-tuning from model.weights
    trunk_lr_factor: float = key(1.0, check=POSITIVE, added=ADDED)


@dataclass
class ScheduleConfig:
    name: Literal["step", "cosine", "constant"] = key("step")  # step = the paper's exponential staircase
    decay_rate: float = key(0.94, check=POSITIVE)  # lr factor per decay period (paper section 8)
    decay_epochs: float = key(2.0, check=POSITIVE)  # decay period in epochs (paper section 8)
    warmup_epochs: float = key(0.0, check=NON_NEGATIVE)  # linear warm-up length in epochs (not in the paper)
    warmup_start: float = key(0.1, check=UNIT)  # lr factor at step 0 of the warm-up
    min_lr_factor: float = key(0.0, check=UNIT)  # cosine floor as a fraction of lr


@dataclass
class TrainConfig:
    epochs: int = key(100, check=POSITIVE)  # paper section 8 trains 100 epochs
    batch_size: int = key(32, check=POSITIVE)  # per process (paper section 8: 32 per replica)
    label_smoothing: float = key(0.1, check=UNIT)  # paper section 7, uniform u(k)
    aux_weight: float = key(0.4, check=NON_NEGATIVE)  # auxiliary loss weight (TF-slim's value; not in the paper)
    precision: Literal["fp32", "bf16"] = key("fp32")  # bf16 = torch.autocast with bfloat16
    ema: bool = key(True)  # evaluate with a moving average of the weights (paper section 8)
    ema_decay: float = key(0.9999, check=UNIT)  # TF-slim's; warmed up as TF's ExponentialMovingAverage(num_updates)
    seed: int = key(0)  # seeds python, numpy, torch, data order and augmentation
    deterministic: bool = key(False)  # torch deterministic algorithms: exact resume, slower on GPU
    device: str = key("auto", kind=RUNTIME)  # auto = cuda when available (local rank's GPU under torchrun), else cpu
    # also write last.pt every N optimiser steps (0 = at epoch ends only)
    checkpoint_every: int = key(0, check=NON_NEGATIVE, kind=RUNTIME)
    # also keep checkpoints/epoch_NNNN.pt of the last K epochs (0 = none; detectron2-style)
    keep_checkpoints: int = key(2, check=NON_NEGATIVE, kind=RUNTIME, added=ADDED)
    # a step line (without a TTY) and step scalars every N optimiser steps (detectron2's 20)
    log_every: int = key(20, check=AT_LEAST_ONE, kind=RUNTIME, added=ADDED)
    # also write TensorBoard events to RUN_DIR/tb when tensorboard is installed
    tensorboard: bool = key(True, kind=RUNTIME, added=ADDED)
    max_steps_per_epoch: Optional[int] = key(None, check=POSITIVE)  # cut epochs short (smoke runs)
    # torch.set_num_threads for CPU runs (None = torch's default)
    threads: Optional[int] = key(None, check=POSITIVE, kind=RUNTIME)
    # frozen: the trunk's batch norms keep the statistics they start with (model.weights'; detectron2's FrozenBN for
    # fine-tuning with small batches); their scale and shift train
    bn_stats: Literal["running", "frozen"] = key("running", added=ADDED)
    # torch.compile the model's forward (timm's --torchcompile): faster steps after a first step that compiles (~40
    # s at width 1.0 on 2 CPU cores); same weights and files
    compile: bool = key(False, kind=RUNTIME, added=ADDED)


@dataclass
class EvalConfig:
    batch_size: int = key(64, check=POSITIVE)  # evaluation batch
    every: int = key(1, check=POSITIVE)  # validate every N epochs (and always after the last)
    use_ema: bool = key(True)  # validate the EMA weights when train.ema is on
    bootstrap: int = key(1000, check=POSITIVE)  # bootstrap resamples for top-1's confidence interval
    ci: float = key(0.95, check=UNIT)  # confidence level of that interval
    seed: int = key(0)  # bootstrap seed


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (str/int/float/bool/None only): YAML- and weights_only-safe."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "Config":
        """Build and type-check a config from a (possibly partial) nested dict over the defaults."""
        merged = _merge(Config._defaults(), data, source=source)
        sections = {}
        for name, sub_cls in _section_types().items():
            values = {k: check_value(f"{name}.{k}", v, hint, source)
                      for k, (v, hint) in _zip_hints(sub_cls, merged[name]).items()}
            sections[name] = sub_cls(**values)
        cfg = cls(**sections)
        check_ranges(cfg, source)
        return cfg

    @staticmethod
    def _defaults() -> dict[str, dict[str, Any]]:
        return Config().to_dict()


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _zip_hints(sub_cls: type, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(sub_cls)
    return {k: (values[k], hints[k]) for k in values}


def _merge(base: dict, update: dict, *, source: str, prefix: str = "") -> dict:
    """Recursive merge that rejects keys the base does not have (typos are errors)."""
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: '{prefix or '<root>'}' must be a mapping, got {type(update).__name__}")
    out = dict(base)
    for name, value in update.items():
        full = f"{prefix}{name}"
        if name not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{source}: unknown key '{full}' (known under '{prefix or '<root>'}': {known})")
        if isinstance(base[name], dict):
            out[name] = _merge(base[name], value, source=source, prefix=f"{full}.")
        else:
            out[name] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.01'`` -> (['optim', 'lr'], 0.01); the value is parsed as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value, e.g. optim.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{text}': empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Fold ``key=value`` overrides into a nested dict (unknown keys are caught by ``Config.from_dict``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{text}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def _presets_dir() -> Path:
    """Where the YAML presets live: the installed ``configs`` package, else the source tree's configs/."""
    try:
        import configs  # the repository's configs/ package (see configs/__init__.py)

        return Path(configs.__file__).parent
    except ImportError:
        return Path(__file__).resolve().parent.parent / "configs"


BENCH_PREFIX = "bench_"  # configs/bench_NAME.yaml are `lowres bench --preset NAME` presets, not training configs


def list_presets(kind: Literal["train", "bench", "all"] = "train") -> list[str]:
    """Names of the YAML presets: training ones (``smoke``, ``cpu``, ``paper``, ``second_stage``) by default,
    ``kind="bench"`` the bench presets (``bench_smoke`` ...), ``"all"`` both."""
    names = sorted(p.stem for p in _presets_dir().glob("*.yaml"))
    if kind == "all":
        return names
    return [n for n in names if n.startswith(BENCH_PREFIX) == (kind == "bench")]


def preset_path(name_or_path: str | Path) -> Path:
    """A YAML file path, or a preset name resolved in configs/ (``'smoke'`` -> configs/smoke.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = _presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a preset (presets: {', '.join(list_presets())})")


def _refuse_bench_preset(raw: Any, source: str) -> None:
    """A bench preset (``bench:`` + ``config:`` sections) given to ``train``: say which command takes it."""
    if isinstance(raw, dict) and "bench" in raw:
        name = Path(source).stem
        hint = f"lowres bench --preset {name[len(BENCH_PREFIX):]}" if name.startswith(BENCH_PREFIX) else "lowres bench"
        raise ConfigError(f"{source} is a bench preset (it has a 'bench:' section): run it with `{hint}`; "
                          f"training presets: {', '.join(list_presets())}")


def default_train_config(config_file: str | None, *, data: str | None, out_dir: str | None, resume: bool
                         ) -> tuple[str | None, str | None]:
    """``(config, note)`` when no --config is given: the run's own config.yaml on --resume; the paper's recipe
    with --data (a real run, hours: the time per epoch is printed after the first steps); the smoke preset
    without data, so the first command a user types finishes in seconds and says what it did."""
    if config_file is not None:
        return config_file, None
    saved = Path(out_dir) / "config.yaml" if out_dir else None
    if resume and saved is not None and saved.is_file():
        return str(saved), None
    if data is None:
        return "smoke", ("note: no --config and no --data: running the smoke preset (configs/smoke.yaml: {summary}) "
                         "on the generated synthetic set, a check that everything works; for a real run pass "
                         "--data DIR (the paper's recipe) or --config NAME")
    return "paper", ("note: no --config: the paper's recipe (configs/paper.yaml: {summary}); the time per epoch is "
                     "estimated after the first steps. --config cpu is the 2-core-CPU recipe")


def describe(cfg: Config) -> str:
    """``"stem 79, width 0.125, 2 epochs of at most 4 steps, batch 8, rmsprop_tf"``: a run's size in a line."""
    t = cfg.train
    steps = f" of at most {t.max_steps_per_epoch} steps" if t.max_steps_per_epoch else ""
    return (f"stem {cfg.model.stem}, width {cfg.model.width:g}, {t.epochs} epochs{steps}, batch {t.batch_size}, "
            f"{cfg.optim.name}")


def read_yaml(path: Path, *, complete: bool = False) -> dict[str, Any]:
    """A config file's mapping; unreadable, malformed or non-UTF-8 files (and, with ``complete``, files that
    lack any key of a resolved config) are a :class:`ConfigError` naming the file and the place."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): is it a config file?") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"{path}: malformed YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    missing = missing_keys(raw, Config) if complete else []
    if missing:
        raise ConfigError(f"{path} is incomplete ({len(missing)} keys missing, e.g. {', '.join(missing[:3])}): a "
                          "resolved config has every key, so it was truncated or edited; restore it, or pass --config")
    return raw or {}


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key, anything else (None included) replaces."""
    out = dict(base)
    for name, value in update.items():
        both = isinstance(value, dict) and isinstance(out.get(name), dict)
        out[name] = _deep_merge(out[name], value) if both else value
    return out


def _base_path(name: Any, referrer: Path) -> Path:
    """The file a ``base:`` names: a YAML path relative to ``referrer``, else a preset of configs/."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{referrer}: 'base' must be a preset name or a YAML path, got {name!r}")
    for path in (referrer.parent / name, _presets_dir() / f"{name}.yaml"):
        if path.is_file():
            return path
    beside = referrer.parent / name
    raise ConfigError(f"{referrer}: base '{name}' is neither a file ({beside}) nor a preset "
                      f"(presets: {', '.join(list_presets())})")


def resolve_base(raw: dict[str, Any], path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``raw`` (a config mapping read from ``path``) merged over its ``base:`` chain; without one, ``raw``.

    A base that does not exist or that leads back to a file of the chain is a :class:`ConfigError` naming the
    file; a base's own mistakes (unknown keys, wrong types) are reported against the base's file."""
    chain = (*_chain, path.resolve())
    if BASE_KEY not in raw:
        return raw
    base = _base_path(raw[BASE_KEY], path)
    if base.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base.resolve()))
        raise ConfigError(f"{path}: 'base' makes a cycle ({cycle}): a preset cannot inherit from itself")
    base_raw = resolve_base(read_yaml(base), base, chain)
    _refuse_bench_preset(base_raw, str(base))
    Config.from_dict(base_raw, source=str(base))  # a mistake in the base is reported against the base
    return _deep_merge(base_raw, {k: v for k, v in raw.items() if k != BASE_KEY})


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                stem: int | None = None, data: str | None = None, complete: bool = False) -> Config:
    """Resolve defaults < YAML (file or preset name, over its ``base:`` chain) < ``--set`` overrides <
    ``stem``/``data`` flags.

    ``complete=True`` requires the file to be a full resolved config (a run folder's config.yaml on resume)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if config is not None:
        path = preset_path(config)
        source = str(path)
        raw = read_yaml(path, complete=complete)
        _refuse_bench_preset(raw, source)
        raw = resolve_base(raw, path)
        Config.from_dict(raw, source=source)  # report YAML mistakes against the file, not the flags
    raw = apply_overrides(raw, list(overrides))
    flags = bool(overrides)
    if stem is not None:
        raw.setdefault("model", {})["stem"] = int(stem)
        flags = True
    if data is not None:
        raw.setdefault("data", {})["path"] = str(data)
        flags = True
    return Config.from_dict(raw, source=f"{source} + flags" if flags else source)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (the run folder's config.yaml), atomically (no ``base:``: every key)."""
    return atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode("utf-8"))
