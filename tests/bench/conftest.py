"""Fixtures for the bench tests: one cache folder and one smallest-possible smoke bench per session.

(pytest runs in importlib mode: test modules take these as fixtures, never by importing this file.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def bench_cache(cache_root: Path) -> Path:
    """The session's one cache folder (tests/conftest.py): synthetic set and crop caches shared with every test."""
    return cache_root


@pytest.fixture(scope="session")
def tiny_bench_args(bench_cache: Path) -> Callable[..., list[str]]:
    """``tiny_bench_args(out, *extra)``: CLI arguments of the smoke preset cut to the smallest run that
    still has two epochs (learning curves, resume) and every variant."""

    def make(out: Path, *extra: str) -> list[str]:
        sets = [f"data.cache_dir={bench_cache}", "data.max_train=16", "data.max_val=16", "train.batch_size=8",
                "train.max_steps_per_epoch=1", "train.threads=1", "eval.bootstrap=50",
                "bench.throughput.batch=2", "bench.throughput.iters=1", "bench.throughput.warmup=0"]
        return ["bench", "--preset", "smoke", "--out", str(out), "--no-progress",
                *[a for s in sets for a in ("--set", s)], *extra]

    return make


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory: pytest.TempPathFactory, tiny_bench_args: Callable[..., list[str]]) -> Path:
    """Run ``lowres bench --preset smoke`` once (through the CLI) and return its report folder."""
    from click.testing import CliRunner

    from lowres.cli import main

    out = tmp_path_factory.mktemp("bench-smoke")
    result = CliRunner().invoke(main, tiny_bench_args(out), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out
