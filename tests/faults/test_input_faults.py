"""Hostile and broken inputs: flipped bytes in checkpoints, empty and text files as checkpoints, malformed
YAML, bad numbers, wrong paths, missing devices, unexpected errors. Each is one or two lines naming the file
and the reason, with exit code 1 or 2, and nothing is created."""
from __future__ import annotations

import random

import pytest
import torch
from click.testing import CliRunner

from lowres.cli import main
from lowres.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def test_flipped_bytes_in_a_checkpoint_are_reported_never_loaded_silently(trained_run, tmp_path):
    # 40 flips at random offsets, one at a time: each either breaks the archive or changes a stored value
    # (both: CheckpointError) or lands on bytes that carry nothing (alignment padding: loads identically).
    original = (trained_run / "last.pt").read_bytes()
    reference = load_checkpoint(trained_run / "last.pt")
    rng = random.Random(0)
    damaged, path = 0, tmp_path / "flipped.pt"
    for offset in rng.sample(range(len(original)), 40):
        data = bytearray(original)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            assert "corrupted" in str(exc) or "not a lowres checkpoint" in str(exc), str(exc)
            damaged += 1
            continue
        assert _same(state, reference), f"a flip at byte {offset} changed the checkpoint without an error"
    assert damaged > 20  # most of the file is tensor data, so most flips must be caught


def test_a_checkpoint_whose_tensors_were_changed_is_corrupted(trained_run, tmp_path):
    state = load_checkpoint(trained_run / "last.pt")
    save_checkpoint(state, tmp_path / "ok.pt")
    load_checkpoint(tmp_path / "ok.pt")  # re-saved: a fresh, valid checksum
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key] + 1
    torch.save(state, tmp_path / "edited.pt")  # the old checksum, new tensors
    with pytest.raises(CheckpointError, match="is corrupted: its content does not match its checksum"):
        load_checkpoint(tmp_path / "edited.pt")


@pytest.mark.parametrize("content, message", [(b"", "is empty (0 bytes)"),
                                              (b"epoch: 3\nweights: lots\n", "not a PyTorch archive"),
                                              (None, "corrupted")])  # None: the first half of a real one
def test_empty_text_and_truncated_checkpoints_are_clear_messages(content, message, trained_run, tmp_path):
    bad = tmp_path / "bad.pt"
    data = (trained_run / "last.pt").read_bytes()
    bad.write_bytes(content if content is not None else data[:len(data) // 2])
    result = _invoke("eval", "--checkpoint", str(bad), "--out", str(tmp_path / "m.json"))
    assert result.exit_code == 1 and message in result.output and str(bad) in result.output, result.output
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("text, message", [("model: {stem: 79\n  width: [", "malformed YAML at line 2"),
                                           (b"\xff\xfe\x00\x01", "not UTF-8 text"),
                                           ("- just\n- a list\n", "must be a YAML mapping"),
                                           ("model:\n  widht: 2\n", "unknown key 'model.widht'")])
def test_malformed_configs_are_refused_before_anything_is_created(text, message, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = _invoke("train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and message in result.output and str(config) in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [("optim.lr=nan", "'optim.lr' must be a finite number"),
                                              ("model.width=.nan", "'model.width' must be a finite number"),
                                              ("optim.lr=-1", "'optim.lr' must be > 0"),
                                              ("eval.bootstrap=-1", "'eval.bootstrap' must be > 0"),
                                              ("eval.bootstrap=0", "'eval.bootstrap' must be > 0"),
                                              ("augment.hflip=1.5", "'augment.hflip' must be in [0, 1]"),
                                              ("schedule.warmup_epochs=-2", "must be >= 0")])
def test_out_of_range_numbers_are_refused_up_front(setting, message, tmp_path):
    result = _invoke("train", "--config", "smoke", "--set", setting, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_out_under_a_file_and_missing_data_are_refused_before_work(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    result = _invoke("train", "--config", "smoke", "--out", str(afile / "run"))
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    result = _invoke("train", "--config", "smoke", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "nowhere: data folder not found" in result.output, result.output
    result = _invoke("crops", "--out", str(afile))
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_eval_and_export_refuse_a_bad_out_before_loading_anything(trained_run, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    for command in (["eval"], ["export", "--format", "torchscript"]):
        result = _invoke(*command, "--checkpoint", str(trained_run / "last.pt"), "--out", str(afile / "m.json"))
        assert result.exit_code == 2 and "Invalid value for '--out'" in result.output, result.output


def test_an_unsupported_onnx_opset_is_refused_up_front(trained_run, tmp_path):
    result = _invoke("export", "--checkpoint", str(trained_run / "last.pt"), "--format", "onnx", "--opset", "5",
                     "--out", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1 and "ONNX opset 5 is not supported" in result.output, result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_message(trained_run, tmp_path):
    result = _invoke("eval", "--checkpoint", str(trained_run / "last.pt"), "--device", "cuda",
                     "--out", str(tmp_path / "m.json"))
    assert result.exit_code == 1 and "no CUDA GPU is available" in result.output, result.output


def test_an_unexpected_error_writes_its_traceback_to_a_log(monkeypatch, tmp_path):
    from lowres.models import profile

    def broken(**kwargs):  # type: ignore[no-untyped-def]
        raise KeyError("a bug")

    monkeypatch.setattr(profile, "stem_table", broken)
    monkeypatch.setenv("LOWRES_LOG_DIR", str(tmp_path / "logs"))
    result = _invoke("info")
    assert result.exit_code == 1 and "internal error (KeyError" in result.output, result.output
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in result.output
    assert "Traceback" in logs[0].read_text() and "a bug" in logs[0].read_text()
