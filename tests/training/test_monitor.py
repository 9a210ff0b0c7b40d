"""What a person watches: train.log, the per-epoch line, step lines without a TTY, scalars.csv (no duplicate
steps after a resume), provenance in run folder and checkpoint, the last K periodic checkpoints, and the
`lowres train` defaults (smoke without data, --print-config, bench presets refused)."""
from __future__ import annotations

import csv
import logging
import json

import yaml
from click.testing import CliRunner

from lowres.cli import main
from lowres.checkpoint import load_checkpoint
from lowres.training.state import save_periodic
from lowres.training.monitor import RunMonitor, format_duration, read_scalars
from lowres.training.run import train


def _scalar_steps(run_dir, tag):
    return [r["step"] for r in read_scalars(run_dir) if r["tag"] == tag]


def test_run_writes_log_epoch_lines_scalars_and_provenance(tiny_config, tmp_path, caplog):
    cfg = tiny_config("train.epochs=2", "train.max_steps_per_epoch=3", "train.log_every=2", "eval.bootstrap=10",
                      "train.keep_checkpoints=1")
    caplog.set_level(logging.INFO, logger="lowres")
    train(cfg, tmp_path / "run", progress=True)  # pytest's stderr is no TTY: no bars
    messages = [r.getMessage() for r in caplog.records]
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    epoch_lines = [m for m in messages if m.startswith("epoch ") and "val top-1" in m]
    assert len(epoch_lines) == 2 and all(m in log for m in epoch_lines)
    for key in ("train loss", "acc", "val top-1", "top-5", "lr", "images/s", "ETA"):
        assert key in epoch_lines[0], key
    assert epoch_lines[1].endswith("done")
    assert [m for m in messages if " step 2/3 " in m], "no step line without a TTY"
    assert any(m.startswith("estimate: ") for m in messages)
    assert _scalar_steps(run, "step/loss") == [1, 2, 4, 6]  # the first step, then every log_every
    assert _scalar_steps(run, "epoch/val_top1") == [3, 6]
    val = [r["value"] for r in read_scalars(run) if r["tag"] == "epoch/val_top1"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert val == [h["val_top1"] for h in history]
    provenance = json.loads((run / "provenance.json").read_text())
    assert len(provenance) == 1 and provenance[0]["versions"]["torch"] and "commit" in provenance[0]
    assert provenance[0]["data"]["synthetic"] and provenance[0]["data"]["files"]  # instances JSON fingerprinted
    assert all(len(f["sha256"]) == 64 for f in provenance[0]["data"]["files"].values())
    assert load_checkpoint(run / "last.pt")["provenance"] == provenance
    best = load_checkpoint(run / "last.pt")["best_epoch"]  # the newest keep_checkpoints, and the best epoch's
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted({"epoch_0002.pt", f"epoch_{best:04d}.pt"})


def test_resume_drops_repeated_scalars_and_appends_provenance(tiny_config, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=4", "train.log_every=1", "eval.bootstrap=10",
                      "train.checkpoint_every=2")
    train(cfg, run, progress=False)
    # Pretend the run was killed after step 3 while its checkpoint says 2 steps: rows for step 3+ must go.
    rows = list(csv.reader((run / "scalars.csv").open()))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[2]) <= 3 and r[3].startswith("step/")]
    with (run / "scalars.csv").open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    state = load_checkpoint(run / "last.pt")
    mid = tmp_path / "mid"
    mid.mkdir()
    for name in ("scalars.csv", "provenance.json"):
        (mid / name).write_bytes((run / name).read_bytes())
    from lowres.checkpoint import save_checkpoint

    save_checkpoint({**state, "epoch": 0, "global_step": 2,  # written with its checksum, as a real run would
                     "totals": {"steps": 2, "count": 16, "loss_sum": 1.0, "correct": 0, "seconds": 1.0},
                     "history": []}, mid / "last.pt")
    (mid / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    train(cfg, mid, resume=True, progress=False)
    assert _scalar_steps(mid, "step/loss") == [1, 2, 3, 4]  # step 3 once, not twice
    assert len(json.loads((mid / "provenance.json").read_text())) == 2


def test_save_periodic_keeps_last_k(tmp_path):
    for epoch in range(1, 6):
        save_periodic({"model": {}, "config": {}}, tmp_path, epoch, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0004.pt", "epoch_0005.pt"]
    assert save_periodic({"model": {}, "config": {}}, tmp_path / "none", 1, keep=0) is None


def test_monitor_step_lines_only_without_tty(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lowres")
    mon = RunMonitor(tmp_path, epochs=1, log_every=1, tensorboard=False, tty=True)
    mon.start(steps_per_epoch=2, resume_step=0)
    mon.step(0, 1, 1, 1.0, 0.1, 10.0)
    mon.close()
    assert not [r for r in caplog.records if " step 1/2 " in r.getMessage()]
    assert _scalar_steps(tmp_path, "step/loss") == [1]


def test_tensorboard_off_is_said_once_per_process_on_the_console(tmp_path, console, capsys, caplog):
    """The bench trains many runs in one process: the console says it once, every run's log still has it."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        import pytest

        pytest.skip("tensorboard is installed here: the note is for its absence")
    for k in range(2):
        mon = RunMonitor(tmp_path / str(k), epochs=1, log_every=1, tensorboard=True)
        mon.start(steps_per_epoch=1, resume_step=0)
        mon.close()
    assert capsys.readouterr().err.count("TensorBoard is off") == 1
    assert len([r for r in caplog.records if "TensorBoard is off" in r.getMessage()]) == 2


def test_format_duration():
    assert [format_duration(s) for s in (42, 390, 3 * 3600 + 5 * 60)] == ["42 s", "6.5 min", "3 h 05 min"]


def test_cli_train_without_config_or_data_runs_smoke_and_says_so(cache_root, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--stem", "79", "--set", f"data.cache_dir={cache_root}",
                                       "--set", "train.threads=1", "--set", "eval.bootstrap=10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "smoke preset" in result.output and "synthetic" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["width"] == 0.125


def test_cli_print_config_and_paper_default(tmp_path):
    result = CliRunner().invoke(main, ["train", "--stem", "151", "--data", str(tmp_path), "--print-config"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["model"]["stem"] == 151 and cfg["train"]["epochs"] == 100 and cfg["model"]["width"] == 1.0
    assert cfg["data"]["path"] == str(tmp_path.resolve())
    assert not (tmp_path / "config.yaml").exists()


def test_cli_train_help_and_bench_presets():
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "second_stage" in help_text and "bench_" not in help_text
    result = CliRunner().invoke(main, ["train", "--config", "bench_cpu", "--print-config"])
    assert result.exit_code != 0 and "lowres bench --preset cpu" in result.output
    assert "Traceback" not in result.output


def test_tensorboard_events_hold_the_same_scalars_as_the_csv(tmp_path):
    """With the optional tensorboard package: events in RUN_DIR/tb, the same steps and values as scalars.csv."""
    import pytest

    pytest.importorskip("tensorboard", reason="optional dependency: pip install 'lowres[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mon = RunMonitor(tmp_path, epochs=1, log_every=1, tensorboard=True, tty=True)
    mon.start(steps_per_epoch=3, resume_step=0)
    for step, loss in ((1, 2.5), (2, 2.0), (3, 1.25)):
        mon.step(0, step, step, loss, 0.1, 10.0)
    mon.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("step/loss")]
    assert logged == [(1, 2.5), (2, 2.0), (3, 1.25)]
    assert _scalar_steps(tmp_path, "step/loss") == [1, 2, 3]
