"""`lowres export`: TorchScript and ONNX files whose outputs equal the eager model's (atol 1e-4), any batch size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lowres.cli import main
from lowres.export import export_model, load_metadata
from lowres.builder import load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _eager(checkpoint: Path, x: torch.Tensor, softmax: bool) -> torch.Tensor:
    model = load_model(checkpoint).model
    with torch.no_grad():
        logits = model(x)
    return logits.softmax(1) if softmax else logits


def _check_metadata(path: Path, fmt: str, softmax: bool) -> None:
    for meta in (load_metadata(path), json.loads(Path(f"{path}.json").read_text())):
        assert meta["format"] == fmt and meta["stem"] == 79 and meta["num_classes"] == 81
        assert meta["class_names"][-1] == "background" and meta["geometry"]["mode"] == "square"
        assert meta["output"]["name"] == ("probabilities" if softmax else "logits")


def test_torchscript_export_equals_eager(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "second_stage.pt"
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--format", "torchscript",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    _check_metadata(out, "torchscript", softmax=False)
    scripted = torch.jit.load(str(out))
    for n in (1, 5):
        x = torch.randn(n, 3, 79, 79)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), _eager(checkpoint, x, False), atol=1e-4, rtol=0)


def test_onnx_export_equals_eager_in_onnxruntime(checkpoint: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # the torch.export-based ONNX exporter needs it
    out = tmp_path / "second_stage.onnx"
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--softmax",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    _check_metadata(out, "onnx", softmax=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "crops" and session.get_inputs()[0].shape[0] == "batch"
    for n in (1, 3, 9):  # the example batch was 2: every other size exercises the dynamic dimension
        x = torch.randn(n, 3, 79, 79)
        got = session.run(None, {"crops": x.numpy()})[0]
        np.testing.assert_allclose(got, _eager(checkpoint, x, True).numpy(), atol=1e-4, rtol=0)


def test_export_logits_are_not_flat(tiny_model: torch.nn.Module, cmap_bg, tmp_path: Path) -> None:
    """Equality above is on a random model; make the logits vary so a wrong graph cannot pass by accident."""
    from detection_bridge.boxes import CropGeometry

    model = type(tiny_model)(79, 81, width=0.125, min_depth=8).eval()
    with torch.no_grad():
        model.fc.weight.normal_(0, 50.0)
    out = export_model(model, tmp_path / "m.pt", "torchscript", category_map=cmap_bg, geometry=CropGeometry())
    x = torch.randn(4, 3, 79, 79)
    with torch.no_grad():
        eager = model(x)
        assert eager.std() > 1e-4
        torch.testing.assert_close(torch.jit.load(str(out))(x), eager, atol=1e-4, rtol=1e-4)


def test_export_errors(checkpoint: Path, tmp_path: Path) -> None:
    bad = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--format", "tflite",
                                    "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "tflite" in bad.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = CliRunner().invoke(main, ["export", "--checkpoint", str(junk), "--format", "torchscript",
                                    "--out", str(tmp_path / "x.pt")])
    assert bad.exit_code != 0 and "not a lowres checkpoint" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x.pt").exists()
