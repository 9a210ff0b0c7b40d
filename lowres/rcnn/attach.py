"""Plug a :class:`~lowres.rcnn.SecondStage` behind a torchvision detector.

torchvision's R-CNNs (and its other detectors) take a list of float ``(3, H, W)`` images in [0, 1] and return,
in eval mode, one dict per image with ``boxes`` (xyxy, in the input image's pixels), ``labels`` and ``scores``.
The second stage needs exactly those images and boxes, so wrapping is a composition, not a subclass of
``RoIHeads``: the detector runs unchanged and its outputs are rescored from the original pixels.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from .fusion import Fusion, LabelSpace
from .second_stage import SecondStage, as_fusion

__all__ = ["RescoredDetector", "attach"]


class RescoredDetector(nn.Module):
    """``detector`` followed by ``second_stage.rescore`` in eval mode.

    Training mode delegates to the detector (``model(images, targets)`` returns its loss dict), so the
    wrapped detector can still be fine-tuned; the second stage is not trained here.
    """

    def __init__(self, detector: nn.Module, second_stage: SecondStage, fusion: str | Fusion = "product", *,
                 background_threshold: float | None = 0.5, max_area: float | str | None = None,
                 label_map: Mapping[int, int] | Sequence[int | None] | None = None) -> None:
        super().__init__()
        fusion = as_fusion(fusion, background_threshold, max_area)  # checks the rule once, up front
        if not isinstance(second_stage, SecondStage):
            raise TypeError(f"second_stage must be a lowres.rcnn.SecondStage, got {type(second_stage).__name__}")
        self.detector, self.second_stage = detector, second_stage
        self.fusion = fusion
        self.label_space = LabelSpace(second_stage.category_map, label_map)  # checks the map once, up front

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.training:
            return self.detector(images, targets)
        detections = self.detector(images)
        return self.second_stage.rescore(images, detections, self.fusion, label_map=self.label_space)


def attach(detector: nn.Module, second_stage: SecondStage, fusion: str | Fusion = "product", *,
           background_threshold: float | None = 0.5, max_area: float | str | None = None,
           label_map: Mapping[int, int] | Sequence[int | None] | None = None) -> RescoredDetector:
    """Return a module whose eval forward is ``detector`` then rescoring (same inputs, same output format).

    ``label_map`` maps the detector's labels to COCO category ids (default: they are category ids, as for
    torchvision's COCO-trained detectors). ``fusion``: a rule name (with ``background_threshold`` and the
    optional size gate ``max_area``) or a fitted :class:`~lowres.rcnn.fusion.Fusion` (``--fusion auto``'s JSON,
    :meth:`Fusion.load`). See :mod:`lowres.rcnn.fusion` for the rules.
    """
    return RescoredDetector(detector, second_stage, fusion, background_threshold=background_threshold,
                            max_area=max_area, label_map=label_map)
