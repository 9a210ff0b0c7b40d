"""Loading ecosystem weights: wrappers, classifier skipping, and clear errors for bad files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from lowres import build_model
from lowres.models import load_inception_v3_weights
from lowres.models.weights import WeightsError


def _tv_state(num_classes: int = 1000, aux: bool = True) -> dict[str, torch.Tensor]:
    return torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False,
                                           num_classes=num_classes).state_dict()


def test_file_with_wrapper_and_ddp_prefix_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _tv_state().items()}}, path)
    report = load_inception_v3_weights(build_model(79), path)
    assert len(report.loaded) == len(_tv_state())


def test_timm_style_source_without_aux_head_keeps_aux_initial() -> None:
    model = build_model(151)
    report = load_inception_v3_weights(model, _tv_state(aux=False))
    assert report.kept_initial and all(k.startswith("AuxLogits.") for k in report.kept_initial)
    assert repr(report) == f"LoadReport({report.summary()})" and str(len(report.loaded)) in repr(report)
    assert not any(k in repr(report) for k in report.loaded)  # print(report) is a line, not ~600 key names


def test_other_number_of_classes_needs_skip_classifier() -> None:
    model = build_model(299, num_classes=81)
    with pytest.raises(ValueError, match="skip_classifier"):
        load_inception_v3_weights(model, _tv_state())
    report = load_inception_v3_weights(model, _tv_state(), skip_classifier=True)
    assert set(report.skipped_classifier) == {"fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias"}
    assert "skipped a classifier of another size: AuxLogits (2 tensors), fc (2 tensors)" in report.summary()


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pth"
    torch.save(_tv_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cannot read weights file .*truncated\.pth"):
        load_inception_v3_weights(build_model(79), path)


def test_non_inception_weights_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not an Inception-v3 state dict"):
        load_inception_v3_weights(build_model(79), path)


def test_other_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shape of 'Conv2d_1a_3x3.conv.weight'"):
        load_inception_v3_weights(build_model(79, width=0.5), _tv_state())


def test_missing_file_and_non_state_dict(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), path)


def test_files_that_are_not_weights_say_what_they_are(tmp_path: Path) -> None:
    text = tmp_path / "README.md"
    text.write_text("# not weights\n")
    with pytest.raises(WeightsError, match=r"README\.md is not a weights file"):
        load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), text)
    objects = tmp_path / "objects.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, objects)  # a pickled module, not a state dict
    with pytest.raises(WeightsError, match="refused") as info:
        load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), objects)
    assert "weights_only=False" not in str(info.value)  # never suggest running the file's code


def test_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        with pytest.raises(WeightsError, match="pip install safetensors"):
            load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), path)
    else:
        with pytest.raises(WeightsError, match="not an Inception-v3 state dict"):
            load_inception_v3_weights(build_model(79, width=0.125, min_depth=8), path)


def test_a_lowres_checkpoint_gives_its_ema_weights_checksum_verified(trained_checkpoint: Path, tmp_path: Path) -> None:
    """A ``lowres train`` checkpoint passed as weights is read by lowres.checkpoint (the one reader of them), so
    its checksum is verified: an edited copy is refused rather than loaded."""
    from lowres.builder import build_model_from_config, checkpoint_config
    from lowres.checkpoint import load_checkpoint
    from lowres.errors import CheckpointError

    state = load_checkpoint(trained_checkpoint)
    model = build_model_from_config(checkpoint_config(state, trained_checkpoint), 9, pretrained=False)
    load_inception_v3_weights(model, trained_checkpoint)
    ema = state["ema"]["module"]
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    ema["fc.bias"] = ema["fc.bias"] + 1.0  # an edit that keeps the archive valid but not its checksum
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    with pytest.raises(CheckpointError, match="checksum"):
        load_inception_v3_weights(model, edited)
