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
    assert describe_data_dir(_coco(tmp_path / "c")) == {"coco": ["train", "val"]}
    assert describe_data_dir(_image_folder(tmp_path / "i")) == {"imagefolder": ["train", "val"]}
    assert describe_data_dir(tmp_path / "missing") == {}


def test_wrong_folder_layout_and_split_messages(tmp_path):
    (tmp_path / "stuff" / "photos").mkdir(parents=True)
    with pytest.raises(MalformedFileError) as err:
        check_data_dir(tmp_path / "stuff")
    assert err.value.reason == "unknown_layout" and "photos/" in err.value.detail  # what is there instead
    with pytest.raises(MalformedFileError) as err:
        check_data_dir(_coco(tmp_path / "c"), "test")
    assert err.value.reason == "missing_split" and "train, val" in err.value.detail  # the splits that are there
    with pytest.raises(MalformedFileError) as err:
        check_data_dir(_image_folder(tmp_path / "i"), "val", layouts=("coco",))
    assert err.value.reason == "unsupported_layout" and "train, val" in err.value.detail
    assert check_data_dir(tmp_path / "c", "val") == tmp_path / "c"


def test_every_verb_gives_the_same_message_for_the_same_folder(tmp_path):
    wrong = tmp_path / "notdata"
    (wrong / "photos").mkdir(parents=True)
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    runs = {
        "crops": ["crops", "--data", str(wrong), "--out", str(tmp_path / "c")],
        "train": ["train", "--data", str(wrong), "--config", "smoke", "--out", str(tmp_path / "t"), "--set", cache],
        "bench": ["bench", "--preset", "smoke", "--data", str(wrong), "--out", str(tmp_path / "b"), "--set", cache],
    }
    for mistake, folder, expected in (("unknown layout", wrong, "notdata: data folder is neither a COCO layout"),
                                      ("missing folder", tmp_path / "nowhere", "nowhere: data folder not found")):
        for verb, args in runs.items():
            result = CliRunner().invoke(main, [str(folder) if a == str(wrong) else a for a in args])
            assert result.exit_code != 0 and expected in result.output, (mistake, verb, result.output)
            assert "Traceback" not in result.output
