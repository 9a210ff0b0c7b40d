"""The one atomic-write helper: a failure at any point before the rename leaves the old file whole and no
temporary file; an OS error names the target path; the rename is made durable by an fsync of the folder."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from detection_bridge import fileio
from detection_bridge.fileio import atomic_path, atomic_write_bytes, atomic_write_json, remove_stale_temporaries


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failure_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"top1": 0.5})
    old = target.read_bytes()

    def crash(src, dst):  # the new content is fully written and fsynced; the process dies before the rename
        assert Path(src).read_bytes() == b'{"top1": 0.75}\n'
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"top1": 0.75})
    assert target.read_bytes() == old
    assert _listing(tmp_path) == ["metrics.json"]  # no temporary file left


def test_a_full_disk_while_writing_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "plot.png"
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))  # as savefig would on a full disk
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert _listing(tmp_path) == []


def test_a_read_only_folder_names_the_target(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".config.yaml.1.abc.tmp"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "config.yaml", b"x")
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "config.yaml")


def test_the_rename_is_followed_by_an_fsync_of_the_folder(tmp_path, monkeypatch):
    events: list[str] = []
    real_replace, real_fsync_dir = os.replace, fileio.fsync_dir
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    monkeypatch.setattr(fileio, "fsync_dir", lambda d: (events.append(f"fsync {Path(d).name}"), real_fsync_dir(d)))
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"1")
    assert events == ["replace", "fsync sub"]
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"1"


def test_json_is_strict_and_optionally_sorted(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"b": float("nan"), "a": [1.0, float("inf")]}, indent=1,
                             sort_keys=True)
    text = path.read_text()
    assert json.loads(text) == {"a": [1.0, None], "b": None}
    assert text.index('"a"') < text.index('"b"') and text.endswith("}\n")


def test_new_files_get_the_permissions_open_would_give(tmp_path):
    path = atomic_write_bytes(tmp_path / "a", b"")
    assert path.stat().st_mode & 0o777 == fileio.default_mode()


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    dead = tmp_path / f".last.pt.{dead_pid}.abcd.tmp"
    live = tmp_path / f".last.pt.{os.getpid()}.efgh.tmp"
    for p in (dead, live):
        p.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert _listing(tmp_path) == [live.name]


def test_a_folder_is_published_whole_or_not_at_all(tmp_path):
    from detection_bridge.fileio import building_folder, publish_folder

    final = tmp_path / "store"
    with pytest.raises(RuntimeError):
        with building_folder(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("the build fails")
    assert list(tmp_path.iterdir()) == []  # the half-built folder is gone, nothing published
    with building_folder(final) as tmp:
        (tmp / "index.json").write_text("mine")
        publish_folder(tmp, final, same=lambda folder: False)
    assert (final / "index.json").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["store"]
    with building_folder(final) as tmp:  # a second process built the same folder: the first one's stays
        (tmp / "index.json").write_text("theirs")
        publish_folder(tmp, final, same=lambda folder: (folder / "index.json").is_file())
    assert (final / "index.json").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["store"]
    with pytest.raises(OSError):  # something else is there: an error, never a silent replacement
        with building_folder(final) as tmp:
            (tmp / "index.json").write_text("other")
            publish_folder(tmp, final, same=lambda folder: False)
    assert (final / "index.json").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["store"]
