"""Classification metrics read the way a detection person reads them.

Top-1 alone hides what matters for a second-stage classifier: how it does on *small* objects (COCO's size
buckets), on rare classes (balanced accuracy, per-class accuracy), how sure the number is on a few thousand
crops (bootstrap interval), and, on detector boxes, whether it recognises background. Everything here works
on plain arrays of top-k predictions and targets, so training's validation, ``lowres eval`` and the
benchmark report all compute the same numbers from the same function.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["SIZE_BUCKETS", "confusion_matrix", "bootstrap_ci", "classification_metrics"]

SIZE_BUCKETS = ("small", "medium", "large")  # COCO: area < 32^2, < 96^2, otherwise


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` ([C, C] int64): row i is where class i's crops went."""
    targets = np.asarray(targets, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    flat = targets * num_classes + preds
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def bootstrap_ci(correct: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (resampling crops with replacement).

    Crops from one image are not independent, so this is an optimistic (narrow) interval; it is still the
    honest first answer to "is 0.2 points on 1,254 crops a difference?".
    """
    correct = np.asarray(correct, dtype=np.float64)
    n = correct.size
    if n == 0 or n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, 256):  # chunks bound memory at 256 x N
        stop = min(start + 256, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = correct[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _safe_div(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _per_class(conf: np.ndarray, topk_hits: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> list[dict]:
    rows = []
    for label, name in enumerate(names):
        count = int(conf[label].sum())
        mask = targets == label
        rows.append({
            "label": label, "name": name, "count": count,
            "top1": _safe_div(conf[label, label], count),
            "top5": _safe_div(topk_hits[mask].sum(), count),
            "predicted": int(conf[:, label].sum()),
        })
    return rows


def _per_bucket(correct: np.ndarray, buckets: Sequence[str] | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if buckets is None:
        return out
    buckets_arr = np.asarray(buckets)
    for bucket in SIZE_BUCKETS:
        mask = buckets_arr == bucket
        count = int(mask.sum())
        out[bucket] = {"count": count, "top1": _safe_div(correct[mask].sum(), count)}
    return out


def _background(conf: np.ndarray, background_label: int | None) -> dict | None:
    """Precision and recall of the background class: does the classifier reject the detector's misses?"""
    if background_label is None:
        return None
    b = background_label
    tp = int(conf[b, b])
    return {"label": b, "count": int(conf[b].sum()), "predicted": int(conf[:, b].sum()),
            "precision": _safe_div(tp, conf[:, b].sum()), "recall": _safe_div(tp, conf[b].sum())}


def classification_metrics(topk: np.ndarray, targets: np.ndarray, *, num_classes: int,
                           class_names: Sequence[str] | None = None, size_buckets: Sequence[str] | None = None,
                           background_label: int | None = None, n_boot: int = 1000, ci: float = 0.95,
                           seed: int = 0, loss: float | None = None) -> dict[str, Any]:
    """All evaluation numbers from top-k predictions ([N, k], best first) and targets ([N]).

    Returns a JSON-ready dict: ``count``, ``top1``, ``top5``, ``top1_ci`` [lo, hi], ``balanced_accuracy``
    (mean per-class recall over classes present), ``size_buckets`` {small|medium|large: {count, top1}},
    ``per_class`` [{label, name, count, top1, top5, predicted}], ``confusion_matrix`` ([true][pred] counts),
    ``background`` {precision, recall, ...} or None, and ``loss`` when given.
    """
    topk = np.asarray(topk, dtype=np.int64).reshape(len(targets), -1)
    targets = np.asarray(targets, dtype=np.int64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    n = len(targets)
    correct = (topk[:, 0] == targets) if n else np.zeros(0, dtype=bool)
    top5_hits = (topk[:, :5] == targets[:, None]).any(axis=1) if n else np.zeros(0, dtype=bool)
    conf = confusion_matrix(targets, topk[:, 0] if n else targets, num_classes)
    recalls = [conf[c, c] / conf[c].sum() for c in range(num_classes) if conf[c].sum() > 0]
    return {
        "count": n,
        "loss": loss,
        "top1": _safe_div(correct.sum(), n),
        "top5": _safe_div(top5_hits.sum(), n),
        "top1_ci": list(bootstrap_ci(correct, n_boot=n_boot, ci=ci, seed=seed)),
        "ci_level": ci,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "size_buckets": _per_bucket(correct, size_buckets),
        "per_class": _per_class(conf, top5_hits, targets, names),
        "confusion_matrix": conf.tolist(),
        "background": _background(conf, background_label),
    }
