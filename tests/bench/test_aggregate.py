"""The bench's statistics and its reading, on hand-made numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowres.bench.reading import _contrast_sentence, _verdict_vs_number
from lowres.bench.report import paired_difference, seed_summary


def test_seed_summary_mean_spread_and_interval_of_the_seed_mean():
    # 2 seeds x 400 crops: seed 0 right on the first 240 crops (60%), seed 1 on the first 160 (40%).
    correct = np.zeros((2, 400))
    correct[0, :240] = 1
    correct[1, :160] = 1
    s = seed_summary(correct, n_boot=2000, seed=1)
    assert s["mean"] == pytest.approx(0.5) and s["per_seed"] == pytest.approx([0.6, 0.4])
    assert s["sd"] == pytest.approx(math.sqrt(0.02))  # ddof 1: ((0.1)^2 + (0.1)^2) / 1
    # Per-crop mean over seeds: 160 x 1.0, 80 x 0.5, 160 x 0.0; its standard error is sqrt(var / n).
    per_crop = correct.mean(axis=0)
    half = 1.96 * per_crop.std() / math.sqrt(400)
    lo, hi = s["ci"]
    assert lo == pytest.approx(0.5 - half, abs=0.01) and hi == pytest.approx(0.5 + half, abs=0.01)


def test_one_seed_has_no_spread_and_a_degenerate_case_has_a_point_interval():
    s = seed_summary(np.ones((1, 50)), n_boot=200)
    assert s["sd"] is None and s["mean"] == 1.0 and s["ci"] == [1.0, 1.0]


def test_paired_difference_on_the_same_crops():
    a = np.array([[1, 1, 1, 1, 0, 0, 0, 0] * 50])
    assert paired_difference(a, a, n_boot=200) == {"delta": 0.0, "ci": [0.0, 0.0]}
    better = a.copy()
    better[0, 4::8] = 1  # b right on one more crop in eight
    d = paired_difference(better, a, n_boot=2000, seed=0)
    assert d["delta"] == pytest.approx(0.125)
    lo, hi = d["ci"]
    assert 0.0 < lo < 0.125 < hi  # a paired interval excludes 0 where the two own intervals would overlap


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.03, 0.005, "cannot tell them apart"),        # holds the paper's -1.4 and zero
    (-0.03, -0.005, "agrees with the paper"),         # holds -1.4, excludes zero
    (-0.005, 0.01, "no detectable difference"),      # holds zero only
    (-0.10, -0.05, "agrees in sign only"),            # same sign, much larger gap
    (0.02, 0.05, "disagrees with the paper"),         # opposite sign
])
def test_verdict_against_the_paper(lo, hi, expected):
    assert expected in _verdict_vs_number(lo, hi, -0.014)


def test_contrast_sentence_reports_overlap_and_the_naive_claim():
    c = {"a": "naive-79", "b": "79", "question": "q", "delta": -0.2, "ci": [-0.25, -0.15], "paper_delta": None,
         "cis_overlap": False}
    text = _contrast_sentence(c)
    assert "do not overlap" in text and "`naive-79` is worse than `79`" in text and "agrees with" in text


def test_identical_results_are_called_identical_not_a_disagreement():
    c = {"a": "151", "b": "299", "question": "q", "delta": 0.0, "ci": [0.0, 0.0], "paper_delta": -0.002,
         "cis_overlap": True}
    assert "exactly the same crops" in _contrast_sentence(c)
