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
def console():
    """The CLI's console logging (lowres._console.setup_console) for one test, removed afterwards."""
    import logging

    from lowres._console import LOGGERS, setup_console

    setup_console()
    yield
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The real COCO slice beside the repository; tests that need it skip, saying why, where it is absent."""
    if not (COCO_MINI / "annotations" / "instances_val.json").is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI} (it lives in ../shared beside the repository)")
    return COCO_MINI


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated ImageNet-layout folder: 3 classes (colour-coded, so a tiny network can learn them), 8 train
    and 3 val images each, of varied sizes; one grayscale image."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet") / "inet"
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(("n01440764", "n02102040", "n02979186")):
        for split, count in (("train", 8), ("val", 3)):
            for i in range(count):
                h, w = int(rng.integers(48, 120)), int(rng.integers(48, 120))
                pixels = rng.integers(0, 60, (h, w, 3)) + np.eye(3, dtype=np.int64)[c] * 180
                image = Image.fromarray(pixels.astype(np.uint8))
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                (image.convert("L") if (c, i) == (0, 0) else image).save(path, quality=90)
    return root


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one data.cache_dir of the session, for every package's tests: the synthetic set is generated once and
    a crop cache of the same records is built once, whichever test needs it first."""
    return tmp_path_factory.mktemp("lowres-cache")


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """``last.pt`` of a real ``lowres train`` run (CLI, smoke preset on the synthetic set, detector boxes with a
    background class, two optimiser steps): what the checkpoint readers must accept, written by its writer."""
    from click.testing import CliRunner

    from lowres.cli import main

    root = tmp_path_factory.mktemp("trained")
    sets = [f"data.cache_dir={cache_root}", "train.epochs=1", "train.max_steps_per_epoch=2", "train.threads=1",
            "eval.bootstrap=10", "data.boxes=detections", "data.background=true"]
    result = CliRunner().invoke(main, ["train", "--config", "smoke", "--out", str(root / "run"), "--no-progress",
                                       *[a for s in sets for a in ("--set", s)]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run" / "last.pt"
