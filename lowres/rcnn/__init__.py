"""The second stage of a detector: classify a detector's boxes with a low-resolution network and rescore them.

Szegedy et al. 2016, section 9: "dedicated high-cost low resolution networks for smaller objects in the R-CNN
context". Public API:

* :class:`SecondStage` (``classify``, ``rescore``, ``from_checkpoint``): crops with the bridge's geometry via
  ``roi_align`` on the images' device, chunked, bf16 where native.
* :func:`attach`: wrap a torchvision detector so its eval forward returns rescored detections.
* :func:`fuse` and :data:`FUSIONS` (``replace``, ``product``, ``max``): the fusion rules, and :class:`Fusion`
  (per-size rules, size gating, JSON), all applied by :func:`fuse_with` in :mod:`lowres.rcnn.fusion`.
* :func:`calibrate_file`: ``--fusion auto``, the fusion fitted by COCO AP on a calibration split
  (:mod:`lowres.rcnn.calibrate`).
* :func:`roi_crops`: the crops alone; :mod:`lowres.rcnn.files`: COCO results files in and out (``lowres rescore``).
"""
from .attach import RescoredDetector, attach
from .calibrate import calibrate_file
from .crops import roi_crops
from .fusion import FUSIONS, Fusion, LabelSpace, RuleParams, fuse, fuse_with
from .second_stage import PRECISIONS, SecondStage, StageOptions, bf16_supported, resolve_precision

__all__ = ["SecondStage", "StageOptions",
           "attach", "RescoredDetector", "fuse", "fuse_with", "Fusion", "RuleParams", "FUSIONS",
           "LabelSpace", "calibrate_file", "roi_crops", "PRECISIONS", "bf16_supported", "resolve_precision"]
