"""Fixtures shared by every test folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = REPO_ROOT.parent / "shared" / "data" / "coco-mini"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def coco_mini() -> Path:
    """The real COCO slice beside the repository; tests that need it skip, saying why, where it is absent."""
    if not (COCO_MINI / "annotations" / "instances_val.json").is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI} (it lives in ../shared beside the repository)")
    return COCO_MINI
