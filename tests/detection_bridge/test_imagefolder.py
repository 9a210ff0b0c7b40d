"""ImageNet-layout folders: layout detection, class map, bad inputs, and the resolution-faithful crops."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from detection_bridge.errors import CacheError, EmptyResultError, ImageError, MalformedFileError
from detection_bridge.imagecrops import (DecodedImages, ImageFolderDataset, central_box, open_or_build_decoded, random_resized_box,
                                         resize_region)
from detection_bridge.imagefolder import detect_layout, imagefolder_category_map, load_imagefolder_split


def _image(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse.convert(mode).save(path, quality=95)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """train: 3 classes x 3 images (one grayscale, one CMYK), val: 2 classes x 2; a mapping file; a stray file."""
    root = tmp_path / "inet"
    for c, wnid in enumerate(("n02", "n01", "n03")):
        for i in range(3):
            mode = ("L", "CMYK", "RGB")[i]
            _image(root / "train" / wnid / f"{i}.JPEG", 64 + 8 * i, 48, 10 * c + i, mode)
        if wnid != "n03":
            for i in range(2):
                _image(root / "val" / wnid / f"v{i}.jpg", 50, 70, 100 + 10 * c + i)
    (root / "train" / "n01" / "README.txt").write_text("not an image")
    (root / "LOC_synset_mapping.txt").write_text("n01 tench, Tinca tinca\nn02 English springer\n")
    return root


def test_detect_layout(folder: Path, tmp_path: Path) -> None:
    assert detect_layout(folder) == "imagefolder"
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    assert detect_layout(tmp_path / "coco") == "coco"
    (tmp_path / "neither" / "stuff.txt").parent.mkdir()
    with pytest.raises(MalformedFileError) as err:
        detect_layout(tmp_path / "neither")
    assert err.value.reason == "unknown_layout"


def test_class_map_sorted_folders_with_names(folder: Path) -> None:
    cmap = imagefolder_category_map(folder)
    assert cmap.keys == ("n01", "n02", "n03")  # sorted folder names: ImageFolder's order
    assert cmap.names == ["tench", "English springer", "n03"]  # mapping file, else the folder name
    assert cmap.num_classes == 3 and cmap.background_label is None


def test_records_labels_and_ignored_files(folder: Path) -> None:
    train = load_imagefolder_split(folder, "train")
    assert len(train.records) == 9
    assert [r.label for r in train.records] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(Path(r.image_path).parent.name == train.category_map.keys[r.label] for r in train.records)
    assert train.summary()["ignored_files"] == {".txt": 1}
    val = load_imagefolder_split(folder, "val")
    assert val.category_map == train.category_map  # labels from the train split's classes
    assert [r.label for r in val.records] == [0, 0, 1, 1]


def test_empty_class_folder_is_an_error(folder: Path) -> None:
    (folder / "train" / "n04").mkdir()
    (folder / "train" / "n04" / "notes.txt").write_text("x")
    with pytest.raises(EmptyResultError, match="n04") as err:  # the folder is named
        load_imagefolder_split(folder, "train")
    assert err.value.reason == "empty_class"


def test_val_class_missing_from_train_is_an_error(folder: Path) -> None:
    _image(folder / "val" / "n09" / "a.jpg", 30, 30, 1)
    with pytest.raises(MalformedFileError, match="n09") as err:
        load_imagefolder_split(folder, "val")
    assert err.value.reason == "unknown_class"


def test_missing_split_lists_the_splits_found(folder: Path) -> None:
    with pytest.raises(MalformedFileError) as err:
        load_imagefolder_split(folder, "test")
    assert err.value.reason == "missing_split" and "train, val" in err.value.detail


def test_grayscale_and_cmyk_become_rgb(folder: Path) -> None:
    ds = ImageFolderDataset(load_imagefolder_split(folder, "train").records[:3], 79)
    for i in range(3):
        image, label, index = ds[i]
        assert image.shape == (3, 79, 79) and image.dtype == torch.uint8 and (label, index) == (0, i)
    gray = ds[0][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # a grayscale file stays gray


def test_corrupt_image_names_the_file(folder: Path) -> None:
    bad = folder / "train" / "n02" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    records = [r for r in load_imagefolder_split(folder, "train").records if r.image_path == str(bad)]
    with pytest.raises(ImageError, match=r"broken\.JPEG") as err:
        ImageFolderDataset(records, 79)[0]
    assert err.value.reason == "corrupt_image"


def test_central_box_is_exact() -> None:
    assert central_box(224, 224) == (14.0, 14.0, 210.0, 210.0)  # 0.875 x 224 = 196, centred
    assert central_box(300, 200, 0.5) == (100.0, 50.0, 200.0, 150.0)  # a square of half the shorter side


@pytest.mark.parametrize("size", [79, 151, 299])
def test_eval_crop_matches_pil_and_torchvision_references(tmp_path: Path, size: int) -> None:
    path = tmp_path / "c" / "x.png"  # lossless, so the references see exactly the decoded pixels
    _image(path, 224, 224, 7)
    image = Image.open(path).convert("RGB")
    ours = ImageFolderDataset([_record(path)], size)[0][0]
    ours_u8 = ours.float()
    pil_ref = np.asarray(image.crop((14, 14, 210, 210)).resize((size, size), Image.BILINEAR), dtype=np.float64)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    tv_ref = TF.resized_crop(tensor, 14, 14, 196, 196, [size, size], antialias=True).double()
    assert np.abs(ours_u8.permute(1, 2, 0).double().numpy() - pil_ref).max() <= 2.0
    assert (ours_u8.double() - tv_ref).abs().mean() <= 2.0  # an independent implementation, within 2/255


def _record(path: Path):
    from detection_bridge.imagefolder import ImageRecord

    return ImageRecord(str(path), 0, "c", 0)


def test_one_resample_from_the_originals_not_two(tmp_path: Path) -> None:
    """A 79 px view is cut from the original pixels, not from a 299 px resample of them."""
    path = tmp_path / "c" / "x.png"
    _image(path, 224, 224, 3)
    image = Image.open(path).convert("RGB")
    box = (14.0, 14.0, 210.0, 210.0)
    once = resize_region(image, box, 79).astype(np.int16)
    twice = np.asarray(Image.fromarray(resize_region(image, box, 299)).resize((79, 79), Image.BILINEAR),
                       dtype=np.int16)
    reference = np.asarray(image.crop((14, 14, 210, 210)).resize((79, 79), Image.BILINEAR), dtype=np.int16)
    assert np.abs(once - reference).max() <= 1 < np.abs(twice - reference).max()


def test_random_regions_respect_area_and_aspect() -> None:
    rng = np.random.default_rng(0)
    for width, height in ((224, 224), (500, 120), (90, 400)):
        for _ in range(300):
            x0, y0, x1, y1 = random_resized_box(width, height, rng, area=(0.25, 1.0))
            w, h = x1 - x0, y1 - y0
            assert 0 <= x0 < x1 <= width + 1e-9 and 0 <= y0 < y1 <= height + 1e-9
            area = w * h / (width * height)
            if 0.25 - 1e-9 <= area <= 1 + 1e-9 and 3 / 4 - 1e-9 <= w / h <= 4 / 3 + 1e-9:
                continue
            # the fallback: the largest centred region of an admissible aspect
            assert math.isclose(x0, (width - w) / 2) and math.isclose(y0, (height - h) / 2)
            assert 3 / 4 - 1e-9 <= w / h <= 4 / 3 + 1e-9


def test_train_samples_are_seeded_by_the_global_generator(folder: Path) -> None:
    ds = ImageFolderDataset(load_imagefolder_split(folder, "train").records, 79, train=True)
    np.random.seed(5)
    a = ds[4][0]
    np.random.seed(5)
    assert torch.equal(a, ds[4][0])
    np.random.seed(6)
    assert not torch.equal(a, ds[4][0])


def test_decoded_store_round_trip_and_damage(folder: Path, tmp_path: Path) -> None:
    records = load_imagefolder_split(folder, "train").records
    store = open_or_build_decoded(records, folder, tmp_path / "cache")
    plain, cached = ImageFolderDataset(records, 79), ImageFolderDataset(records, 79, decoded=store)
    expected = [plain[i][0] for i in range(len(records))]
    for i in range(len(records)):
        assert torch.equal(expected[i], cached[i][0])
    moved = Path(records[8].image_path).rename(tmp_path / "moved.jpg")
    assert torch.equal(cached[8][0], expected[8])  # served from the store: the file is never opened
    moved.rename(records[8].image_path)
    again = open_or_build_decoded(records, folder, tmp_path / "cache")
    assert again.path == store.path  # reused, not rebuilt
    with open(store.path / "pixels.u8", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CacheError, match="pixels.u8: 100 bytes"):
        DecodedImages(store.path)
    rebuilt = open_or_build_decoded(records, folder, tmp_path / "cache")  # a damaged store is rebuilt
    assert rebuilt.path == store.path
    assert torch.equal(ImageFolderDataset(records, 79, decoded=rebuilt)[8][0], expected[8])
    _image(Path(records[0].image_path), 40, 40, 99, "L")  # an edited image gets a new store
    assert open_or_build_decoded(records, folder, tmp_path / "cache").path != store.path


def test_decoded_store_on_a_short_or_full_disk_is_a_clear_error_and_leaves_nothing(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    import detection_bridge.cache as cache_mod
    import detection_bridge.imagecrops as imagecrops_mod

    records = load_imagefolder_split(folder, "train").records
    real_usage = shutil.disk_usage
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(CacheError, match=r"not enough disk space for the decoded pixels of \d+ images"):
        open_or_build_decoded(records, folder, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", real_usage)

    class FullDisk:  # the estimate passed, then the disk filled up while writing
        def __init__(self, f):  # type: ignore[no-untyped-def]
            self.f = f

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.f.close()

        def write(self, data):  # type: ignore[no-untyped-def]
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(imagecrops_mod, "open", lambda path, mode: FullDisk(open(path, mode)), raising=False)
    with pytest.raises(CacheError, match=r"pixels\.u8: cannot write the decoded images: No space left"):
        open_or_build_decoded(records, folder, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
