"""`lowres cache list|clean`: entries, sizes, last use; --older-than removes only what was unused that long."""
from __future__ import annotations

import os
import time

from click.testing import CliRunner

from lowres.cache_admin import cache_entries, clean_cache
from lowres.cli import main


def _entry(folder, *, days_old: float, size: int = 1000) -> None:
    folder.mkdir(parents=True)
    (folder / "crops.npy").write_bytes(b"x" * size)
    old = time.time() - days_old * 86400
    for p in (folder / "crops.npy", folder):
        os.utime(p, (old, old))


def test_list_and_clean_by_age(tmp_path):
    root = tmp_path / "cache"
    _entry(root / "crops" / "crops_79px_aaaa", days_old=10, size=2048)
    _entry(root / "crops" / "crops_79px_bbbb", days_old=0.1)
    _entry(root / "crops" / ".crops_79px_cccc.abc.tmp", days_old=0.1)  # a build in progress elsewhere
    _entry(root / "crops" / ".crops_151px_eeee.host-12.build", days_old=0.1)  # the same, current format
    _entry(root / "synthetic-seed0", days_old=40)
    _entry(root / "images" / "decoded_10_dddd", days_old=20)
    (root / "mine.txt").write_text("not a cache entry")
    listed = CliRunner().invoke(main, ["cache", "list", "--cache-dir", str(root)])
    assert listed.exit_code == 0 and "6 entries" in listed.output and "crops/crops_79px_aaaa" in listed.output
    assert "2.0 KB" in listed.output and "10.0 d" in listed.output
    dry = CliRunner().invoke(main, ["cache", "clean", "--cache-dir", str(root), "--older-than", "7", "--dry-run"])
    assert "would remove" in dry.output and len(cache_entries(root)) == 6
    result = CliRunner().invoke(main, ["cache", "clean", "--cache-dir", str(root), "--older-than", "7"])
    assert result.exit_code == 0 and "3 entries" in result.output, result.output
    assert sorted(e.path.name for e in cache_entries(root)) == [
        ".crops_151px_eeee.host-12.build", ".crops_79px_cccc.abc.tmp", "crops_79px_bbbb"]
    clean_cache(root)  # everything, except the young unfinished builds
    assert [e.kind for e in cache_entries(root)] == ["unfinished", "unfinished"]
    assert (root / "mine.txt").is_file() and not list(root.rglob(".deleting-*"))


def test_opening_a_crop_cache_marks_it_used(tmp_path):
    from detection_bridge import synthetic
    from detection_bridge.cache import CacheSpec, build_cache, open_cache
    from detection_bridge.coco import load_split

    data = synthetic.generate(tmp_path / "data")
    crop_set = load_split(data, "val")
    records = crop_set.records[:4]
    cache = build_cache(records, tmp_path / "crops", CacheSpec(32, **crop_set.cache_inputs()))
    listed = CliRunner().invoke(main, ["cache", "list", "--cache-dir", str(tmp_path)])
    assert f"[data/images/val ({len(records)} crops)]" in listed.output  # which data set and split it holds
    old = time.time() - 30 * 86400
    for p in [*cache.path.iterdir(), cache.path]:
        os.utime(p, (old, old))
    assert clean_cache(tmp_path, older_than_days=7, dry_run=True)
    assert open_cache(tmp_path / "crops", records, CacheSpec(32, **crop_set.cache_inputs())) is not None
    assert not clean_cache(tmp_path, older_than_days=7, dry_run=True)


def test_verify_names_a_damaged_crop_cache(tmp_path):
    from detection_bridge import synthetic
    from detection_bridge.cache import CacheSpec, build_cache
    from detection_bridge.coco import load_split

    records = load_split(synthetic.generate(tmp_path / "data"), "val").records[:6]
    good = build_cache(records, tmp_path / "crops", CacheSpec(32))
    bad = build_cache(records[:3], tmp_path / "crops", CacheSpec(32))
    ok = CliRunner().invoke(main, ["cache", "verify", "--cache-dir", str(tmp_path)])
    assert ok.exit_code == 0 and "2 crop cache(s) checked, 0 damaged" in ok.output, ok.output
    shard = bad.shards[0].path
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # a flipped byte: same size, so only the checksum sees it
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["cache", "verify", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1 and "1 damaged" in result.output
    assert f"DAMAGED  {bad.path}" in result.output and f"ok  {good.path}" in result.output


def test_verify_lists_a_cache_of_an_older_format_as_old_not_damaged(tmp_path):
    old = tmp_path / "crops" / "crops_79px_0123456789abcdef"
    old.mkdir(parents=True)
    (old / "index.json").write_text('{"version": 2}')
    result = CliRunner().invoke(main, ["cache", "verify", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"old  {old}: cache format 2" in result.output and "1 crop cache(s) checked, 0 damaged, 1 of an older" \
        in result.output
