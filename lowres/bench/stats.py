"""The bench's statistics: a variant's top-1 over seeds and the difference of two variants, each with an interval
that covers both sources of variation, the validation images drawn and the training runs (seeds).

Why two levels: the paper's Table 2 gaps (0.2 to 1.4 points) are smaller than the seed-to-seed spread of a short
run from scratch, so an interval over images alone (what one seed can give) can be overturned by one more seed.
Bootstrapping the seeds too is the hierarchical bootstrap of nested data (runs, then images within them); see
Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks" (MLSys 2021) for why training
seeds are a source of variance a benchmark must sample.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import bootstrap_ci

__all__ = ["two_level_bootstrap", "seed_summary", "paired_difference"]


def two_level_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray | None = None, *, n_boot: int = 1000,
                        ci: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile interval of the seed-mean top-1 of a (or of a - b) over both sources of variation.

    Each replicate resamples the validation crops (the same crops for a and b: paired) and, independently,
    each variant's seeds, i.e. its training runs (a seed of a and a seed of b are different networks, so they
    are not paired); the statistic is the mean over the drawn seeds of each seed's top-1 on the drawn crops.
    With one seed this is the paired bootstrap over crops; with few seeds the seed part is underestimated
    (resampling S values spreads them by a factor sqrt((S - 1) / S)), which the report says beside it.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = None if correct_b is None else np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    n = a.shape[1]
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    # every replicate's crop draw at once as multinomial counts, so a seed's top-1 on the drawn crops is one
    # matrix product (seeds x crops) @ (crops x replicates) / n
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T.astype(np.float64)  # exact sums of 0/1

    def seed_means(m: np.ndarray) -> np.ndarray:
        per_seed = (m @ counts) / n  # [seeds, replicates]
        draws = rng.integers(0, m.shape[0], size=(m.shape[0], n_boot))
        return per_seed[draws, np.arange(n_boot)].mean(axis=0)

    stats = seed_means(a) - (seed_means(b) if b is not None else 0.0)
    tail = 100 * (1 - ci) / 2
    return [float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))]


def seed_summary(correct: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Top-1 over seeds from a [seeds, crops] 0/1 matrix (same crops in every row).

    ``mean``: mean over seeds; ``per_seed``; ``sd``: standard deviation over seeds (ddof 1; None for one
    seed); ``ci``: interval of the seed-mean over crops and seeds (:func:`two_level_bootstrap`);
    ``ci_images``: over crops only (the per-crop mean over seeds resampled: what more seeds cannot shrink).
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    per_seed = correct.mean(axis=1) if correct.shape[1] else np.full(correct.shape[0], np.nan)
    sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None
    return {"mean": float(per_seed.mean()), "per_seed": per_seed.tolist(), "sd": sd, "n_seeds": len(per_seed),
            "ci": two_level_bootstrap(correct, n_boot=n_boot, ci=ci, seed=seed),
            "ci_images": list(bootstrap_ci(correct.mean(axis=0), n_boot=n_boot, ci=ci, seed=seed))}


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Seed-mean top-1 of a minus that of b on the same crops ([seeds, crops] each): ``ci`` over crops (paired)
    and seeds (:func:`two_level_bootstrap`), ``ci_images`` over crops only."""
    a = np.atleast_2d(correct_a).astype(np.float64)
    b = np.atleast_2d(correct_b).astype(np.float64)
    diff = a.mean(axis=0) - b.mean(axis=0)
    return {"delta": float(diff.mean()), "ci": two_level_bootstrap(a, b, n_boot=n_boot, ci=ci, seed=seed),
            "ci_images": list(bootstrap_ci(diff, n_boot=n_boot, ci=ci, seed=seed))}
