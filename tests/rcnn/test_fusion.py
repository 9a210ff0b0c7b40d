"""Fusion rules on hand-made numbers, background suppression, and the detector <-> classifier label spaces."""
from __future__ import annotations

import pytest
import torch

from detection_bridge.records import CategoryMap
from lowres.rcnn import FUSIONS, LabelSpace, fuse

# 3 object classes + background (label 3). Two detections.
PROBS = torch.tensor([[0.1, 0.6, 0.2, 0.1],    # classifier: class 1
                      [0.3, 0.1, 0.0, 0.6]])   # classifier: background (object argmax: class 0)
SCORES = torch.tensor([0.5, 0.9])
DET_LABELS = torch.tensor([2, 0])               # detector said class 2, then class 0


@pytest.mark.parametrize("rule, labels, scores", [
    ("replace", [1, 0], [0.6, 0.3]),             # classifier's object label and its probability
    ("product", [2, 0], [0.5 * 0.2, 0.9 * 0.3]),  # detector's label, s * p[detector label]
    ("max", [1, 0], [0.5 * 0.6, 0.9 * 0.3]),      # argmax of s * p over objects, its value
])
def test_rules_without_suppression(rule: str, labels: list[int], scores: list[float]) -> None:
    out_labels, out_scores, keep = fuse(PROBS, SCORES, DET_LABELS, rule, background_label=3,
                                        background_threshold=None)
    assert out_labels.tolist() == labels and keep.all()
    torch.testing.assert_close(out_scores, torch.tensor(scores))


@pytest.mark.parametrize("threshold, kept", [(0.5, [True, False]), (0.6, [True, True]), (0.05, [False, False])])
def test_background_suppression(threshold: float, kept: list[bool]) -> None:
    for rule in FUSIONS:
        _, _, keep = fuse(PROBS, SCORES, DET_LABELS, rule, background_label=3, background_threshold=threshold)
        assert keep.tolist() == kept


def test_no_background_class_never_suppresses_and_uses_every_output() -> None:
    probs = torch.tensor([[0.2, 0.3, 0.5]])
    labels, scores, keep = fuse(probs, torch.tensor([0.5]), torch.tensor([0]), "max", background_label=None)
    assert labels.tolist() == [2] and keep.tolist() == [True]
    torch.testing.assert_close(scores, torch.tensor([0.25]))


def test_ties_take_the_lowest_label_and_empty_input() -> None:
    labels, _, _ = fuse(torch.tensor([[0.4, 0.4, 0.2]]), torch.tensor([1.0]), torch.tensor([2]), "replace")
    assert labels.tolist() == [0]
    labels, scores, keep = fuse(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), "max",
                                background_label=3)
    assert labels.shape == scores.shape == keep.shape == (0,)


def test_candidates_restrict_relabelling_to_expressible_classes() -> None:
    candidates = torch.tensor([True, False, True])  # class 1 has no label in the output space
    labels, scores, _ = fuse(PROBS, SCORES, DET_LABELS, "max", background_label=3, background_threshold=None,
                             candidates=candidates)
    assert labels.tolist() == [2, 0]
    torch.testing.assert_close(scores, torch.tensor([0.5 * 0.2, 0.9 * 0.3]))
    labels, _, _ = fuse(PROBS, SCORES, DET_LABELS, "product", background_label=3, candidates=candidates)
    assert labels.tolist() == [2, 0]  # product never relabels


def test_fuse_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(PROBS, SCORES, DET_LABELS, "mean")
    with pytest.raises(ValueError, match="disagree"):
        fuse(PROBS, SCORES[:1], DET_LABELS, "max")
    with pytest.raises(ValueError, match="last label"):
        fuse(PROBS, SCORES, DET_LABELS, "max", background_label=0)


CMAP = CategoryMap((1, 3, 90), ("person", "car", "toothbrush"), background=True)


def test_label_space_identity_is_coco_category_ids() -> None:
    space = LabelSpace(CMAP)
    assert space.to_classifier(torch.tensor([90, 1, 3])).tolist() == [2, 0, 1]
    assert space.to_detector(torch.tensor([2, 0])).tolist() == [90, 1]
    assert space.category_ids(torch.tensor([1])) == [3]
    with pytest.raises(ValueError, match=r"labels \[2, 91\].*not classes"):
        space.to_classifier(torch.tensor([1, 2, 91]))
    with pytest.raises(ValueError, match="not classes"):
        space.to_classifier(torch.tensor([0]))  # torchvision's background label is not a detection class


def test_label_space_with_a_mapping_and_a_list() -> None:
    by_dict = LabelSpace(CMAP, {1: 90, 2: 1, 7: 3})     # e.g. a 3-class detector
    assert by_dict.to_classifier(torch.tensor([1, 2, 7])).tolist() == [2, 0, 1]
    assert by_dict.to_detector(torch.tensor([0, 1, 2])).tolist() == [2, 7, 1]
    by_list = LabelSpace(CMAP, [None, 1, 90])             # index = detector label; 0 = background
    assert by_list.to_classifier(torch.tensor([2, 1])).tolist() == [2, 0]
    assert by_list.candidates.tolist() == [True, False, True]  # replace/max never choose 'car'
    with pytest.raises(ValueError, match="no detector label"):
        by_list.to_detector(torch.tensor([1]))           # 'car' has no detector label in that list
    with pytest.raises(ValueError, match="not classes"):
        by_list.to_classifier(torch.tensor([0]))
