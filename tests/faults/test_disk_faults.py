"""Full and read-only disks, for real: a file size limit (RLIMIT_FSIZE: writes fail with EFBIG, as on a
full disk; works everywhere) and a tiny tmpfs in a private mount namespace (ENOSPC, EROFS; skipped where
mounting is not allowed). Expected: exit 1 or 2 with the path and the reason, no native crash, no
traceback, no half-written or temporary file left behind."""
from __future__ import annotations


def _clean(proc) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode in (1, 2), f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_export_past_the_file_size_limit_is_a_message_not_an_abort(cli, trained_run, tmp_path):
    # torch.jit.save straight to a file aborted in C++ (exit 134) when the write failed
    out = tmp_path / "model.pt"
    proc = cli(["export", "--checkpoint", str(trained_run / "last.pt"), "--format", "torchscript", "--out", str(out)],
               file_size_limit=64 * 1024)
    _clean(proc)
    assert f"{out}: File too large" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the model nor a temporary file


def test_eval_out_on_a_full_disk_leaves_no_empty_file(cli, private_mount, listing, trained_run, tmp_path):
    # a tmpfs of 16 KiB, all of it filled: the metrics JSON cannot be written
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    prefix = private_mount(mnt, "16k")
    fill = ["sh", "-c", f'head -c 16384 /dev/zero > "{mnt}/filler" 2>/dev/null; exec "$@"', "sh"]
    proc = cli(["eval", "--checkpoint", str(trained_run / "last.pt"), "--out", str(mnt / "metrics.json")],
               prefix=[*prefix, *fill])
    _clean(proc)
    assert f"{mnt / 'metrics.json'}: No space left on device" in proc.stderr, proc.stderr
    assert "the disk is full" in proc.stderr
    assert set(listing(proc.stdout)) == {"filler"}  # no 0-byte metrics.json, no temporary file


def test_training_on_a_full_disk_stops_cleanly_and_resumable_files_stay_whole(
        cli, private_mount, listing, fault_cache, tmp_path):
    # 64 KiB: config.yaml fits, the first checkpoint does not
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cli(["train", "--config", "smoke", "--out", str(mnt / "run"), "--no-progress",
                "--set", f"data.cache_dir={fault_cache}", "--set", "train.threads=1", "--set", "train.epochs=1",
                "--set", "train.max_steps_per_epoch=1", "--set", "data.max_val=8", "--set", "eval.bootstrap=5",
                "--set", "train.threads=1"], prefix=private_mount(mnt, "64k"))
    _clean(proc)
    assert f"{mnt / 'run' / 'last.pt'}: No space left on device" in proc.stderr, proc.stderr
    files = listing(proc.stdout)
    assert "run/config.yaml" in files and not [f for f in files if f.endswith((".pt", ".tmp", ".lock"))], files
    # (the run's log, scalars and provenance are there too: they say what happened)
    assert files["run/config.yaml"] > 0


def test_out_on_a_read_only_file_system_is_refused_before_any_work(cli, private_mount, listing, trained_run,
                                                                   tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = cli(["export", "--checkpoint", str(trained_run / "last.pt"), "--format", "torchscript",
                "--out", str(mnt / "sub" / "model.pt")], prefix=private_mount(mnt, "64k", read_only=True))
    _clean(proc)
    assert proc.returncode == 2 and "Read-only file system" in proc.stderr, proc.stderr
    assert listing(proc.stdout) == {}
