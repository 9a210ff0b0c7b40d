"""CategoryMap and CropRecord: contiguous labels, background last, lossless serialisation."""
from __future__ import annotations

import json

import pytest

from detection_bridge.records import CategoryMap, CropRecord

CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]


def test_category_map_is_sorted_and_contiguous():
    cmap = CategoryMap.from_coco(CATEGORIES)
    assert cmap.category_ids == (1, 18, 90) and cmap.names == ["person", "dog", "toothbrush"]
    assert [cmap.label_of(c) for c in (1, 18, 90)] == [0, 1, 2]
    assert [cmap.category_id_of(k) for k in range(3)] == [1, 18, 90]
    assert cmap.num_classes == 3 and cmap.background_label is None
    with pytest.raises(KeyError, match="category id 0"):
        cmap.label_of(0)
    with pytest.raises(KeyError):
        cmap.label_of(2)


def test_background_is_the_last_label_and_object_labels_do_not_move():
    plain, with_bg = CategoryMap.from_coco(CATEGORIES), CategoryMap.from_coco(CATEGORIES, background=True)
    assert with_bg.num_classes == 4 and with_bg.num_object_classes == 3 and with_bg.background_label == 3
    assert with_bg.names[-1] == "background" and with_bg.label_of(0) == 3 and with_bg.category_id_of(3) == 0
    assert all(plain.label_of(c) == with_bg.label_of(c) for c in (1, 18, 90))
    assert 0 in with_bg and 0 not in plain and 18 in plain


def test_category_map_round_trips_through_json():
    cmap = CategoryMap.from_coco(CATEGORIES, background=True)
    assert CategoryMap.from_dict(json.loads(json.dumps(cmap.to_dict()))) == cmap
    with pytest.raises(ValueError, match="reserved"):
        CategoryMap.from_coco([{"id": 0, "name": "x"}])
    with pytest.raises(ValueError, match="duplicate"):
        CategoryMap.from_coco([{"id": 3, "name": "x"}, {"id": 3, "name": "y"}])


def test_record_round_trip_and_validation():
    rec = CropRecord("/x/a.jpg", 7, (1, 2, 3.5, 4), 0, 1, 101, 0.75, 0.6, "small", "detection")
    assert rec.box_xyxy == (1.0, 2.0, 3.5, 4.0)
    assert CropRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    with pytest.raises(ValueError):
        CropRecord("/x/a.jpg", 7, (1, 2, 3, 4), 0, 1, 101, None, None, "tiny", "gt")
    with pytest.raises(ValueError):
        CropRecord("/x/a.jpg", 7, (1, 2, 3, 4), 0, 1, 101, None, None, "small", "proposal")
