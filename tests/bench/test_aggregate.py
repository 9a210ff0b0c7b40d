"""The bench's statistics and its reading, on hand-made numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowres.bench.reading import _contrast_sentence, _verdict_vs_number
from lowres.bench.stats import paired_difference, seed_summary, two_level_bootstrap


def test_seed_summary_mean_spread_and_interval_of_the_seed_mean():
    # 2 seeds x 400 crops: seed 0 right on the first 240 crops (60%), seed 1 on the first 160 (40%).
    correct = np.zeros((2, 400))
    correct[0, :240] = 1
    correct[1, :160] = 1
    s = seed_summary(correct, n_boot=2000, seed=1)
    assert s["mean"] == pytest.approx(0.5) and s["per_seed"] == pytest.approx([0.6, 0.4])
    assert s["sd"] == pytest.approx(math.sqrt(0.02))  # ddof 1: ((0.1)^2 + (0.1)^2) / 1
    # Over images only: the per-crop mean over seeds (160 x 1.0, 80 x 0.5, 160 x 0.0), standard error sqrt(var / n).
    per_crop = correct.mean(axis=0)
    half = 1.96 * per_crop.std() / math.sqrt(400)
    lo, hi = s["ci_images"]
    assert lo == pytest.approx(0.5 - half, abs=0.01) and hi == pytest.approx(0.5 + half, abs=0.01)
    # Over images and seeds: drawing seed 1 twice (p = 1/4) gives 40%, so the interval reaches below 0.42.
    lo, hi = s["ci"]
    assert lo < 0.42 and hi > 0.58 and lo < s["ci_images"][0]


def test_two_level_interval_when_only_the_seeds_vary():
    # Seed 0 right on every crop, seed 1 on none: resampling crops changes nothing, resampling the 2 seeds gives
    # a seed-mean of 1 (p 1/4), 0.5 (p 1/2) or 0 (p 1/4), so the 95% interval is [0, 1].
    correct = np.stack([np.ones(100), np.zeros(100)])
    assert two_level_bootstrap(correct, n_boot=4000, seed=3) == [0.0, 1.0]
    assert seed_summary(correct, n_boot=500)["ci_images"] == [0.5, 0.5]  # every crop is right for half the seeds


def test_two_level_interval_matches_the_variance_of_both_levels():
    # 40 seeds whose top-1 is spread evenly over 0.55..0.75, each right on a random subset of 1,000 crops. The
    # replicate variance is var(seed top-1) / S (seeds resampled) + var(per-crop mean over seeds) / n (crops).
    rng = np.random.default_rng(0)
    seeds, n = 40, 1000
    rates = np.linspace(0.55, 0.75, seeds)
    correct = (rng.random((seeds, n)) < rates[:, None]).astype(float)
    per_seed = correct.mean(axis=1)
    expected = 1.96 * math.sqrt(per_seed.var() / seeds + correct.mean(axis=0).var() / n)
    lo, hi = two_level_bootstrap(correct, n_boot=4000, seed=1)
    assert (hi - lo) / 2 == pytest.approx(expected, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(per_seed.mean(), abs=0.005)
    one = two_level_bootstrap(correct[:1], n_boot=4000, seed=1)  # one seed: the crops alone
    assert (one[1] - one[0]) / 2 == pytest.approx(1.96 * correct[0].std() / math.sqrt(n), rel=0.1)


def test_one_seed_has_no_spread_and_a_degenerate_case_has_a_point_interval():
    s = seed_summary(np.ones((1, 50)), n_boot=200)
    assert s["sd"] is None and s["mean"] == 1.0 and s["ci"] == [1.0, 1.0] and s["ci_images"] == [1.0, 1.0]


def test_paired_difference_on_the_same_crops():
    a = np.array([[1, 1, 1, 1, 0, 0, 0, 0] * 50])
    assert paired_difference(a, a, n_boot=200) == {"delta": 0.0, "ci": [0.0, 0.0], "ci_images": [0.0, 0.0]}
    better = a.copy()
    better[0, 4::8] = 1  # b right on one more crop in eight
    d = paired_difference(better, a, n_boot=2000, seed=0)
    assert d["delta"] == pytest.approx(0.125)
    lo, hi = d["ci"]
    assert 0.0 < lo < 0.125 < hi  # a paired interval excludes 0 where the two own intervals would overlap


def test_paired_difference_counts_the_seeds_of_each_variant():
    # a: 3 seeds at 70, 72, 74% on the same crops as b's one seed at 70%, crop by crop nested (a seed's right crops
    # include the previous one's). Over crops alone a - b = +2.0 is sharp; the seeds widen it to their own spread.
    n = 1000
    b = np.zeros((1, n))
    b[0, :700] = 1
    a = np.zeros((3, n))
    for i, k in enumerate((700, 720, 740)):
        a[i, :k] = 1
    d = paired_difference(a, b, n_boot=4000, seed=2)
    assert d["delta"] == pytest.approx(0.02)
    assert d["ci"][0] <= 0.0 + 1e-9 and d["ci"][1] >= 0.04 - 1e-9  # seed draws reach 70 + 70 + 70 and 74 x 3
    assert d["ci_images"][0] > 0.01  # over crops only: every drawn crop set keeps most of the +2 points


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
