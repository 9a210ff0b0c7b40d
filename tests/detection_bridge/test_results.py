"""The one COCO results reader: its rules, its errors, and raise-or-count through the error policy."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detection_bridge.errors import AnnotationError, ErrorPolicy, MalformedFileError
from detection_bridge.results import Detection, group_by_image, images_in_folder, read_results

GOOD = {"image_id": 3, "category_id": 7, "bbox": [1, 2, 0, 4.5], "score": 0.25}  # a zero width is a valid output
BAD = {
    "bad_detection": [{"image_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},
                      {**GOOD, "image_id": "3"}, {**GOOD, "category_id": True}, [3, 7]],
    "bad_box": [{**GOOD, "bbox": [1, 2, 3]}, {**GOOD, "bbox": [1, 2, float("nan"), 4]},
                {**GOOD, "bbox": [1, 2, -3, 4]}, {**GOOD, "bbox": "1 2 3 4"}],
    "bad_score": [{**GOOD, "score": None}, {**GOOD, "score": float("inf")}],
}


def _write(tmp_path: Path, entries: list) -> Path:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(entries))
    return path


def test_a_valid_file_keeps_every_value_and_the_file_order(tmp_path):
    second = {**GOOD, "image_id": 1, "score": 1}
    dets = read_results(_write(tmp_path, [GOOD, second]))
    assert dets == [Detection(0, 3, 7, (1, 2, 0, 4.5), 0.25), Detection(1, 1, 7, (1, 2, 0, 4.5), 1.0)]
    assert dets[0].to_result() == GOOD and dets[0].box_xyxy == (1.0, 2.0, 1.0, 6.5) and dets[0].area == 0.0
    assert list(group_by_image(dets)) == [1, 3]


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_bad_entry_is_named_or_counted(tmp_path, reason):
    for bad in BAD[reason]:
        path = _write(tmp_path, [GOOD, bad])
        with pytest.raises(AnnotationError) as err:
            read_results(path)
        assert err.value.reason == reason and str(path) in str(err.value) and "detection #1" in str(err.value)
        policy = ErrorPolicy("skip")
        assert read_results(path, policy) == read_results(_write(tmp_path, [GOOD]))
        assert policy.log.counts == {reason: 1}


@pytest.mark.parametrize("content", ['{"image_id": 1}', "[1, 2", ""])
def test_a_file_that_is_not_a_list_is_never_skipped(tmp_path, content):
    path = tmp_path / "dets.json"
    path.write_text(content)
    with pytest.raises(MalformedFileError) as err:
        read_results(path, ErrorPolicy("skip"))
    assert err.value.file == str(path) and err.value.reason == "malformed_json"


def test_images_in_folder_are_found_by_integer_id(tmp_path):
    for name in ("000000000139.jpg", "7.PNG", "notes.txt", "cat.jpg"):
        (tmp_path / name).write_bytes(b"")
    index = images_in_folder(tmp_path)
    assert sorted(index) == [7, 139] and index[139].path == str(tmp_path / "000000000139.jpg")
    assert index[7].size is None
    with pytest.raises(MalformedFileError) as err:
        images_in_folder(tmp_path / "missing")
    assert err.value.reason == "missing_file" and err.value.file == str(tmp_path / "missing")
