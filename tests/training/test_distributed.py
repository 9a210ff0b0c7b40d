"""Two CPU processes under torchrun (gloo): the run finishes, ranks agree, one set of outputs."""
from __future__ import annotations

import json
from pathlib import Path

import torch



def test_two_process_ddp_on_cpu(tiny_config, run_python, child_train, tmp_path):
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=3", "train.checkpoint_every=2",
                      "data.max_val=16", "eval.bootstrap=10")
    out, dump = tmp_path / "run", tmp_path / "ranks"
    run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", child_train,
                json.dumps(cfg.to_dict()), str(out), "--dump", str(dump)])
    r0, r1 = torch.load(dump / "rank0.pt", weights_only=True), torch.load(dump / "rank1.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, value in r0[part].items():
            assert torch.equal(value, r1[part][key]), f"{part}.{key} differs between ranks"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoints", "config.yaml", "last.pt",
                                                     "metrics.jsonl", "provenance.json", "scalars.csv", "train.log",
                                                     "val_metrics.json"]  # rank 0 alone wrote them
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 3
    state = torch.load(out / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["sampler"]["world_size"] == 2


def test_distributed_evaluation_equals_one_process(tiny_config, run_python, tmp_path):
    """Two gloo ranks each evaluate half of the crops; after one gather both hold the one-process metrics."""
    import importlib.util

    from lowres.training.distributed import DistEnv

    cfg = tiny_config("data.max_val=21", "eval.bootstrap=10", "eval.batch_size=4")
    child = str(Path(__file__).with_name("_child_eval.py"))
    run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", child,
                json.dumps(cfg.to_dict()), str(tmp_path)])
    spec = importlib.util.spec_from_file_location("_child_eval", child)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    alone = json.loads(json.dumps(module.evaluate_seeded(cfg, DistEnv()), default=str))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["gathers"] == 1
        metrics = got["metrics"]
        assert metrics["count"] == alone["count"] == 21
        assert abs(metrics["loss"] - alone["loss"]) < 1e-6 * alone["loss"]  # float32 sums over other batches
        for key in ("top1", "top5", "top1_ci", "per_class", "confusion_matrix", "size_buckets", "balanced_accuracy"):
            assert metrics[key] == alone[key], key


def test_a_run_rank_0_refuses_stops_every_rank_at_once(tiny_config, run_python, child_train, tmp_path):
    """A folder that already holds a run (no --resume): rank 0 refuses before any data is read, and rank 1
    learns it at once instead of waiting for rank 0 in its first collective until the timeout."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"a finished run")
    cfg = tiny_config("data.path=/nonexistent/never-read")  # refused before the data is looked at
    proc = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", child_train,
                       json.dumps(cfg.to_dict()), str(out)], timeout=120, check=False)
    assert proc.returncode != 0
    assert "already holds a run" in proc.stderr and "rank 0 refused the run" in proc.stderr, proc.stderr[-2000:]
    assert "nonexistent" not in proc.stderr  # no rank got as far as reading the data
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_one_process_under_torchrun_joins_a_process_group(tiny_config, run_python, child_train, tmp_path):
    """``torchrun --nproc_per_node 1`` runs the distributed path (process group, DDP, gathers) on one device: how
    the nccl path is checked on a machine with one GPU (benchmarks/gpu_check.py); gloo here."""
    cfg = tiny_config("train.epochs=1", "train.max_steps_per_epoch=2", "data.max_val=16", "eval.bootstrap=10")
    out = tmp_path / "run"
    run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", child_train,
                json.dumps(cfg.to_dict()), str(out)], timeout=600)  # alone it builds the session's data first
    assert "distributed: 1 process(es), gloo backend, DDP on cpu" in (out / "train.log").read_text()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["sampler"]["world_size"] == 1 and state["global_step"] == 2
