"""Metric arithmetic on a hand-made confusion case."""
import numpy as np
import pytest

from lowres.metrics import bootstrap_ci, classification_metrics, confusion_matrix


def _case():
    targets = np.array([0, 0, 0, 1, 1, 2])
    top1 = np.array([0, 0, 1, 1, 2, 2])
    second = np.array([1, 2, 0, 0, 1, 0])
    buckets = ["small", "small", "medium", "large", "large", "large"]
    return np.stack([top1, second], axis=1), targets, buckets


def test_hand_made_case():
    topk, targets, buckets = _case()
    m = classification_metrics(topk, targets, num_classes=3, class_names=["cat", "dog", "background"],
                               size_buckets=buckets, background_label=2, n_boot=200)
    assert m["count"] == 6
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(6 / 6)  # k=2 here: the 2 misses have the truth second
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["size_buckets"] == {"small": {"count": 2, "top1": 1.0}, "medium": {"count": 1, "top1": 0.0},
                                 "large": {"count": 3, "top1": pytest.approx(2 / 3)}}
    dog = m["per_class"][1]
    assert dog == {"label": 1, "name": "dog", "count": 2, "top1": 0.5, "top5": 1.0, "predicted": 2}
    bg = m["background"]
    assert bg["precision"] == pytest.approx(0.5) and bg["recall"] == pytest.approx(1.0)
    lo, hi = m["top1_ci"]
    assert 0.0 <= lo <= 4 / 6 <= hi <= 1.0


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(np.array([0, 1]), np.array([1, 1]), 2).tolist() == [[0, 1], [0, 1]]


def test_bootstrap_ci():
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0)
    correct = np.r_[np.ones(700), np.zeros(300)]
    lo, hi = bootstrap_ci(correct, n_boot=2000, seed=1)
    se = (0.7 * 0.3 / 1000) ** 0.5  # normal approximation: 0.7 +- 1.96 se
    assert lo == pytest.approx(0.7 - 1.96 * se, abs=0.006) and hi == pytest.approx(0.7 + 1.96 * se, abs=0.006)
    assert bootstrap_ci(correct, seed=3) == bootstrap_ci(correct, seed=3)


def test_empty_and_absent_classes():
    m = classification_metrics(np.array([[0]]), np.array([0]), num_classes=2, n_boot=10)
    assert m["per_class"][1]["top1"] is None and m["balanced_accuracy"] == 1.0 and m["background"] is None
