"""Training and evaluation configuration: dataclasses in, YAML presets, flag overrides, resolved YAML out
(the files and flags half lives in :mod:`lowres.config_files` and is re-exported here).

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
from typing import Any, Literal, Optional

from detection_bridge.coco import BoxSource, SplitOptions

from .config_checks import (ARCHITECTURE, NON_NEGATIVE, POSITIVE, RUNTIME, UNIT, ConfigError, Range, check_ranges,
                            check_value, key)
from .models.stems import StemSize

__all__ = [
    "ConfigError", "Config", "ModelConfig", "DataConfig", "CropConfig", "AugmentConfig", "OptimConfig",
    "ScheduleConfig", "TrainConfig", "EvalConfig", "load_config", "apply_overrides", "save_config",
    "preset_path", "list_presets", "default_train_config", "read_yaml", "resolve_base", "describe", "parse_override",
    "BENCH_PREFIX", "BASE_KEY",
]

# Each field is declared with its metadata (lowres.config_checks.key): its range check, its kind (architecture:
# a resume keeps it; runtime: where and how fast, never what is learnt; recipe: the rest) and, for keys newer
# than some written run configs, ADDED: those runs lack the key, and its default is what they did.
ADDED = "after 2026-11-22"  # the committed studies' run configs were written by the 2026-11-22 code
UNIT_OPEN = Range(0, 1, low_open=True, text="in (0, 1]")
PIXELS = Range(8, text="null or >= 8 pixels")
AT_LEAST_ONE = Range(1, text=">= 1")
RECORDS = SplitOptions()  # the bridge's record options, at their defaults


@dataclass
class ModelConfig:
    stem: StemSize = key(79, kind=ARCHITECTURE)  # input size = stem variant (paper section 9, Table 2)
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
    # Which records (boxes) a split gives: the bridge's options (detection_bridge.coco.SplitOptions, whose names
    # and defaults these are); the config adds each key's check. Applied by lowres.training.data.split_options.
    boxes: BoxSource = key(RECORDS.boxes)  # ground-truth boxes, a detector's (IoU-labelled), or both
    # COCO results JSON; "{split}" in it is replaced by the split's name, a relative path not found here is looked
    # up in the data folder; None = the one DIR/detections/*_{split}.json (coco-mini has three: name one)
    detections_file: Optional[str] = key(None)
    background: bool = key(RECORDS.background)  # extra background class for detector boxes with IoU < 0.3 (R-CNN)
    # boxes with a side shorter than this (pixels) are skipped
    min_size: float = key(RECORDS.min_size, check=NON_NEGATIVE)
    # a detector box with IoU >= this with an object takes its class (R-CNN's 0.5)
    iou_positive: float = key(RECORDS.iou_positive, check=UNIT, added=ADDED)
    # ... with IoU < this with every object: background (R-CNN's 0.3); between: ignored
    iou_background: float = key(RECORDS.iou_background, check=UNIT, added=ADDED)
    # drop detector boxes scoring below this before matching; None = keep all
    score_threshold: Optional[float] = key(RECORDS.score_threshold, added=ADDED)
    # keep at most this many detector boxes per image, highest score first; None = all
    top_k: Optional[int] = key(RECORDS.top_k, check=POSITIVE, added=ADDED)
    # training only: add this many jittered copies of every ground-truth box (R-CNN-style)
    jitter: int = key(RECORDS.jitter, check=NON_NEGATIVE, added=ADDED)
    # each copy overlaps its box with at least this IoU
    jitter_iou: float = key(RECORDS.jitter_iou, check=UNIT_OPEN, added=ADDED)
    # training only: this many extra copies of every background detector box (the detector's false positives, DCR's
    # hard negatives), each augmented on its own
    background_copies: int = key(RECORDS.background_copies, check=NON_NEGATIVE, added=ADDED)
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
    # torch.compile the model's forward (timm's --torchcompile): faster steps after a first step that compiles
    # (README: how long); same weights and files
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


# The file half (presets, YAML, overrides), re-exported so that `from lowres.config import load_config` keeps
# working; imported last because it builds on the classes above.
from .config_files import (BASE_KEY, BENCH_PREFIX, apply_overrides, default_train_config, describe, list_presets,  # noqa: E402
                           load_config, parse_override, preset_path, read_yaml, resolve_base, save_config)
