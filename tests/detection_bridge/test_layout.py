"""One data-folder check for every command: the same message for the same mistake, listing what is there."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from detection_bridge.errors import MalformedFileError
from detection_bridge.layout import check_data_dir, describe_data_dir
from lowres.cli import main


def _coco(root, splits=("train", "val")):
    for split in splits:
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text('{"images": [], "annotations": [], '
                                                                       '"categories": []}')
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    return root


def _image_folder(root):
    for split in ("train", "val"):
        (root / split / "n01440764").mkdir(parents=True)
        (root / split / "n01440764" / "a.JPEG").write_bytes(b"")
    return root


def test_describe_lists_layouts_and_splits(tmp_path):
    assert describe_data_dir(_coco(tmp_path / "c")) == {"coco-mini": ["train", "val"]}
    assert describe_data_dir(_image_folder(tmp_path / "i")) == {"image-folder": ["train", "val"]}
    assert describe_data_dir(tmp_path / "missing") == {}


def test_wrong_folder_and_wrong_split_messages(tmp_path):
    with pytest.raises(MalformedFileError, match="not a coco-mini-layout folder.*image-folder layout with split"):
        check_data_dir(_image_folder(tmp_path / "i"))
    with pytest.raises(MalformedFileError, match=r"no split 'test'.*coco-mini layout with split\(s\) train, val"):
        check_data_dir(_coco(tmp_path / "c"), "test")
    assert check_data_dir(tmp_path / "c", "val") == tmp_path / "c"


def test_every_verb_gives_the_same_message_for_the_same_folder(tmp_path, cache_root_for_cli):
    wrong = _image_folder(tmp_path / "imagenet")
    expected = "is not a coco-mini-layout folder (expected annotations/instances_SPLIT.json and images/SPLIT/); " \
               "found: image-folder layout with split(s) train, val"
    runs = {
        "crops": ["crops", "--data", str(wrong), "--out", str(tmp_path / "c")],
        "train": ["train", "--data", str(wrong), "--config", "smoke", "--out", str(tmp_path / "t"),
                  "--set", f"data.cache_dir={cache_root_for_cli}"],
        "bench": ["bench", "--preset", "smoke", "--data", str(wrong), "--out", str(tmp_path / "b"),
                  "--set", f"data.cache_dir={cache_root_for_cli}"],
    }
    for verb, args in runs.items():
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and expected in result.output, (verb, result.output)
        assert "Traceback" not in result.output
        missing = [tmp_path / "nowhere" if a == str(wrong) else a for a in args]
        result = CliRunner().invoke(main, [str(a) for a in missing])
        assert result.exit_code != 0 and "nowhere: data folder: folder not found" in result.output, (verb, result.output)


@pytest.fixture
def cache_root_for_cli(tmp_path):
    return tmp_path / "cache"
