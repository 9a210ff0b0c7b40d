"""``SecondStage``: a trained lowres model that classifies and rescores a detector's boxes.

The paper's motivation (section 9): "dedicated high-cost low resolution networks for smaller objects in the
R-CNN context". The detector proposes boxes; this module cuts each box's context crop straight from the
image tensor (:mod:`lowres.rcnn.crops`, the bridge's geometry, on the image's device), runs the model at its
stem size and returns class probabilities, then fuses them with the detector's scores
(:mod:`lowres.rcnn.fusion`). It works with any box source: torchvision detectors (:func:`lowres.rcnn.attach`),
COCO results files (:mod:`lowres.rcnn.files`) or hand-made boxes.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from detection_bridge.boxes import CropGeometry
from detection_bridge.records import CategoryMap

from ..builder import LoadedModel, load_model
from ..device_transforms import resize
from ..models import compile_model
from ..runtime import autocast
from .crops import batch_images, check_boxes, check_images, context_regions, iter_roi_crops
from .fusion import Fusion, LabelSpace, check_detector_scores, fuse_detections
from ..errors import InputError

__all__ = ["SecondStage", "StageOptions", "as_fusion", "bf16_supported", "resolve_precision", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_CHUNK = 64  # crops per model call: 64 x 3 x 299 x 299 floats is 69 MB, and far less at 79


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (CUDA compute capability >= 8.0; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device runs it natively, else ``fp32``; explicit choices pass through.

    bf16 is the default where native because it is much faster, at a small accuracy cost: both are measured by
    ``benchmarks/second_stage_latency.py`` (``--check-bf16`` for the agreement with fp32) and reported in the
    README. Pass ``precision="fp32"`` where exact agreement matters more than latency.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


@dataclass(frozen=True)
class StageOptions:
    """How a :class:`SecondStage` runs, not what it computes: ``chunk_size`` crops per roi_align and model
    call (bounds memory); ``precision`` ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where the device
    supports it natively); ``sampling_ratio``, roi_align's (-1, adaptive, is the area filter that matches the
    bridge's antialiased crops); ``channels_last``: the model in NHWC memory format (converted in place;
    oneDNN's bf16 convolutions are fast in NHWC only, and it never hurts fp32); ``compile``: the model through ``torch.compile`` (:func:`lowres.models.compile_model`, in
    place; each new chunk shape compiles once, then the batch dimension is dynamic)."""

    chunk_size: int = DEFAULT_CHUNK
    precision: str = "auto"
    sampling_ratio: int = -1
    channels_last: bool = True
    compile: bool = False


class SecondStage(nn.Module):
    """Classify boxes of images with a lowres model; rescore detections.

    ``model``: a lowres model (any classifier returning logits in eval mode works). ``category_map``: its
    label space (``num_classes`` must match the model's outputs). ``geometry``: how a box becomes a crop, as
    in training. ``input_size``: side the model sees (default ``model.stem``). ``crop_size``: side cut from
    the image (default ``input_size``); when smaller, crops are upsampled bilinearly to ``input_size``, as the
    benchmark's upsample-79 variant was trained. ``options``: how it runs (:class:`StageOptions`: chunk size,
    precision, roi_align sampling, memory format, compilation).

    The wrapped model always stays in eval mode (``train()`` does not reach it): this module is
    inference-only; train the classifier with ``lowres train``.
    """

    def __init__(self, model: nn.Module, category_map: CategoryMap, geometry: CropGeometry = CropGeometry(),
                 input_size: int | None = None, *, crop_size: int | None = None,
                 options: StageOptions = StageOptions()) -> None:
        super().__init__()
        o = options
        if o.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {o.precision!r}")
        if o.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {o.chunk_size}")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and num_classes != category_map.num_classes:
            raise ValueError(f"the model has {num_classes} outputs but the category map {category_map.num_classes} "
                             f"classes ({category_map.num_object_classes} + background={category_map.background})")
        self.model = model.eval()
        self.channels_last = bool(o.channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        compile_model(self.model, o.compile)
        self.category_map, self.geometry = category_map, geometry
        self.input_size = int(input_size or getattr(model, "stem"))
        self.crop_size = int(crop_size or self.input_size)
        self.chunk_size, self.precision, self.sampling_ratio = int(o.chunk_size), o.precision, int(o.sampling_ratio)

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", *, use_ema: bool = True,
                        options: StageOptions = StageOptions()) -> "SecondStage":
        """Load a ``lowres train`` checkpoint (:func:`lowres.builder.load_model`: its EMA weights when present
        and ``use_ema``, the geometry and crop/input sizes it was trained with), run as ``options`` says."""
        return cls.from_loaded(load_model(path, use_ema=use_ema, device=device), device, options)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, device: str | torch.device = "cpu",
                    options: StageOptions = StageOptions()) -> "SecondStage":
        """The second stage of a checkpoint already loaded by :func:`lowres.builder.load_model`."""
        return cls(loaded.model, loaded.category_map, loaded.geometry, loaded.input_size,
                   crop_size=loaded.crop_size, options=options).to(device)

    def train(self, mode: bool = True) -> "SecondStage":
        super().train(mode)
        self.model.eval()  # BN statistics and dropout of a trained classifier must never change here
        return self

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return self.category_map.num_classes

    def metadata(self) -> dict[str, Any]:
        """What a consumer of the model's outputs needs: input size, classes, crop geometry."""
        return {"input_size": self.input_size, "crop_size": self.crop_size, "stem": getattr(self.model, "stem", self.input_size),
                "num_classes": self.num_classes, "class_names": self.category_map.names,
                "category_map": self.category_map.to_dict(), "geometry": self.geometry.to_dict()}

    # -- classification ----------------------------------------------------------------------------------
    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        return autocast(device, resolve_precision(self.precision, device))

    @torch.no_grad()
    def probabilities_of_crops(self, crops: Tensor) -> Tensor:
        """Softmax of the model over normalised crops ``(N, 3, S, S)`` (one chunk), as float32."""
        device = self.device
        crops = crops.to(device)
        crops = resize(crops, self.input_size)  # upsample-79: as in training (lowres.device_transforms)
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        with self._autocast(device):
            logits = self.model(crops)
        return logits.float().softmax(dim=1)

    @torch.no_grad()
    def classify(self, images: Sequence[Tensor], boxes_xyxy: Sequence[Tensor]) -> list[Tensor]:
        """Class probabilities ``(N_i, C)`` for the boxes of each image, on the model's device.

        ``images``: ``(3, H, W)`` tensors on one device, uint8 (0..255) or float (0..1). ``boxes_xyxy``:
        one ``(N_i, 4)`` tensor per image, in that image's pixels. Crops are cut on the images' device in one
        roi_align call per chunk of ``chunk_size`` boxes (all images together), then classified on the
        model's device. An empty box tensor gives a ``(0, C)`` result; see :func:`lowres.rcnn.crops.check_boxes`
        for what boxes are accepted.
        """
        image_device = check_images(images)
        boxes = check_boxes(boxes_xyxy, len(images))
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [torch.zeros((0, self.num_classes), device=self.device) for _ in counts]
        regions = context_regions(boxes, self.geometry, image_device)
        batch = batch_images([im for im, n in zip(images, counts) if n], self.geometry)
        # batch holds only images that have boxes: renumber the regions' image index accordingly
        remap = torch.cumsum(torch.tensor([n > 0 for n in counts], device=image_device), 0) - 1
        regions[:, 0] = remap[regions[:, 0].long()].to(regions.dtype)
        chunks = iter_roi_crops(batch, regions, self.crop_size, chunk_size=self.chunk_size,
                                sampling_ratio=self.sampling_ratio)
        probs = torch.cat([self.probabilities_of_crops(crops) for crops in chunks])
        return list(probs.split(counts))

    def forward(self, images: Sequence[Tensor], boxes_xyxy: Sequence[Tensor]) -> list[Tensor]:
        return self.classify(images, boxes_xyxy)

    # -- rescoring ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def rescore(self, images: Sequence[Tensor], detections: Sequence[Mapping[str, Tensor]],
                fusion: str | Fusion = "product", *, background_threshold: float | None = 0.5,
                max_area: float | str | None = None,
                label_map: Mapping[int, int] | Sequence[int | None] | LabelSpace | None = None,
                return_probs: bool = False) -> list[dict[str, Tensor]]:
        """Rescore torchvision-format detections (``boxes`` xyxy, ``labels``, ``scores`` per image).

        ``fusion``: a rule name of :data:`~lowres.rcnn.fusion.FUSIONS` (with ``background_threshold`` and an
        optional size gate ``max_area``: ``small``, ``medium`` or square pixels), or a :class:`Fusion`, e.g.
        the one ``lowres rescore --fusion auto`` fitted (:meth:`Fusion.load`) or
        :func:`lowres.rcnn.calibrate.calibrate_file` returns. Returns the same format, on each input's device
        and label space: fused ``labels``/``scores`` (:mod:`lowres.rcnn.fusion`), sorted by the new score
        (descending, stable), with suppressed detections removed from every per-detection entry (``masks``,
        ``keypoints``, ...; other keys are copied). ``label_map`` maps detector labels to COCO category ids
        (default: they are category ids). ``return_probs`` adds ``probs`` ``(N, C)`` in the classifier's
        label space.
        """
        fusion = as_fusion(fusion, background_threshold, max_area)
        if len(images) != len(detections):
            raise ValueError(f"got {len(images)} images but {len(detections)} detection dicts")
        space = label_map if isinstance(label_map, LabelSpace) else LabelSpace(self.category_map, label_map)
        for i, d in enumerate(detections):
            check_detector_scores(_field(d, "scores", i), lambda k, i=i: f"detections[{i}]['scores'][{k}]")
        det_labels = [space.to_classifier(_field(d, "labels", i), f"detections[{i}]")
                      for i, d in enumerate(detections)]
        probs = self.classify(images, [_field(d, "boxes", i) for i, d in enumerate(detections)])
        return [self._fuse_one(d, p, lab, fusion, space, return_probs)
                for d, p, lab in zip(detections, probs, det_labels)]

    def _fuse_one(self, det: Mapping[str, Tensor], probs: Tensor, det_labels: Tensor, fusion: Fusion,
                  space: LabelSpace, return_probs: bool) -> dict[str, Tensor]:
        scores_in = det["scores"]
        n = len(scores_in)
        boxes = det["boxes"].to(probs.device, torch.float64).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        det_labels = det_labels.to(probs.device)
        labels, scores, kept = fuse_detections(fusion, probs, scores_in, det_labels, areas, space)
        order = kept[torch.sort(scores[kept], descending=True, stable=True).indices]  # torchvision's order
        label_device = det["labels"].device
        out_labels = det["labels"].to(torch.int64)[order.to(label_device)]
        changed = (labels[order] != det_labels[order]).to(label_device)
        if changed.any():  # relabelled boxes only: the others keep the detector's own label
            out_labels[changed] = space.to_detector(labels[order][changed.to(labels.device)]).to(label_device)
        out: dict[str, Tensor] = {}
        for key, value in det.items():
            per_detection = isinstance(value, Tensor) and value.dim() > 0 and len(value) == n
            out[key] = value[order.to(value.device)] if per_detection else value
        out["labels"] = out_labels
        out["scores"] = scores[order].to(device=scores_in.device, dtype=scores_in.dtype)
        if return_probs:
            out["probs"] = probs[order]
        return out


def as_fusion(fusion: str | Fusion, background_threshold: float | None = 0.5,
              max_area: float | str | None = None) -> Fusion:
    """A :class:`Fusion` from a rule name (with its threshold and gate) or a fitted one (given as is)."""
    if isinstance(fusion, Fusion):
        if max_area is not None:
            raise ValueError("max_area applies to a named rule; a Fusion carries its own size bands")
        return fusion
    if fusion == "auto":
        raise ValueError("fusion='auto' is fitted on a calibration split: pass the fitted Fusion "
                         "(lowres.rcnn.calibrate.calibrate_file(...), or Fusion.load(the JSON lowres rescore "
                         "--fusion auto wrote beside the checkpoint))")
    return Fusion.rule(fusion, background_threshold=background_threshold, max_area=max_area)


def _field(det: Mapping[str, Tensor], key: str, i: int) -> Tensor:
    if not isinstance(det, Mapping) or not all(k in det for k in ("boxes", "labels", "scores")):
        raise ValueError(f"detections[{i}] must be a dict with 'boxes', 'labels' and 'scores' (torchvision's format)")
    n = {k: len(det[k]) for k in ("boxes", "labels", "scores")}
    if len(set(n.values())) != 1:
        raise ValueError(f"detections[{i}] has {n} entries: boxes, labels and scores must agree")
    return det[key]
