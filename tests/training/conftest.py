"""Fixtures for the training tests: tiny configs over the session's cache (tests/conftest.py), child processes.

(pytest runs in importlib mode: test modules take these as fixtures, never by importing this file.)
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from lowres.config import Config, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_config(cache_root: Path) -> Callable[..., Config]:
    """``tiny_config(*overrides, stem=79, data=None)``: the smoke preset (width 0.125, min_depth 8, batch 8)
    with the session's cache folder and one thread."""

    def make(*overrides: str, stem: int = 79, data: Path | None = None) -> Config:
        return load_config("smoke", [f"data.cache_dir={cache_root}", "train.threads=1", *overrides], stem=stem,
                           data=data)

    return make


def _run_python(args: list[str], *, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """``run_python(args, timeout=240, check=True)``: a fresh interpreter with the repository importable."""
    return _run_python


@pytest.fixture(scope="session")
def child_train() -> str:
    """Path of the child training script used by the resume and DDP tests."""
    return str(REPO_ROOT / "tests" / "training" / "_child_train.py")
