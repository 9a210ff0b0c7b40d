"""The model against the paper's Table 2 geometry and torchvision's Inception-v3."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lowres import STEMS, build_model
from lowres.models import min_input_size
from lowres.models.profile import count_parameters, forward_flops, measured_grids, stem_table

SMALL = dict(width=0.125, min_depth=8)  # tiny but the full topology: tests stay fast
# DESIGN.md section 3: side of the grid entering Mixed_5b, after Mixed_6e and after Mixed_7c.
GRIDS = {299: (35, 17, 8), 151: (35, 17, 8), 79: (36, 17, 8)}


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_forward_shapes_aux_and_gradients(stem: int) -> None:
    model = build_model(stem, num_classes=7, **SMALL)
    x = torch.randn(2, 3, stem, stem)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 7)
    assert torch.isfinite(logits).all() and torch.isfinite(aux).all()
    target = torch.tensor([1, 4])
    (F.cross_entropy(logits, target) + 0.4 * F.cross_entropy(aux, target)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_no_aux_head_means_plain_logits_in_training(stem: int) -> None:
    model = build_model(stem, num_classes=5, aux_logits=False, **SMALL).train()
    assert model.AuxLogits is None
    out = model(torch.randn(2, 3, stem, stem))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_grid_sizes_match_design(stem: int) -> None:
    model = build_model(stem, **SMALL)
    grids = measured_grids(model, stem)
    assert (grids["Mixed_5b_in"], grids["Mixed_6e"], grids["Mixed_7c"]) == GRIDS[stem]
    arithmetic = model.grid_sizes()
    assert (arithmetic["Mixed_5b_in"], arithmetic["Mixed_6e"], arithmetic["Mixed_7c"]) == GRIDS[stem]


def test_state_dicts_identical_across_stems() -> None:
    shapes = {stem: {k: v.shape for k, v in build_model(stem, **SMALL).state_dict().items()} for stem in STEMS}
    assert shapes[79] == shapes[151] == shapes[299]


def test_constant_cost_at_full_width() -> None:
    """Paper section 9: "All three networks have almost identical computational cost" (lowres info's table,
    measured on the meta device)."""
    rows = {r["stem"]: r for r in stem_table()}
    assert rows[299]["gflops"] == pytest.approx(11.43, rel=0.005)  # DESIGN.md section 3
    for stem in (151, 79):
        assert abs(rows[stem]["flops_vs_299"] - 1) < 0.07, (stem, rows[stem])
    assert {r["params"] for r in rows.values()} == {27_163_264}


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_meta_device_profile_equals_a_real_forward(stem: int) -> None:
    """FLOPs, grids and parameters need shapes only: the meta-device model gives a real model's numbers."""
    real = build_model(stem, **SMALL)
    with torch.device("meta"):
        meta = build_model(stem, **SMALL)
    assert forward_flops(meta, stem) == forward_flops(real, stem)
    assert measured_grids(meta, stem) == measured_grids(real, stem)
    assert count_parameters(meta) == count_parameters(real)


def _torchvision_inception(num_classes: int = 1000) -> torch.nn.Module:
    return torchvision.models.inception_v3(
        weights=None, aux_logits=True, init_weights=True, transform_input=False, num_classes=num_classes)


def test_equals_torchvision_at_299_and_loads_into_every_stem() -> None:
    from lowres.models import load_inception_v3_weights

    reference = _torchvision_inception().eval()
    with torch.no_grad():  # non-trivial BN statistics, so the comparison exercises them too
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 299, 299)
    for stem in sorted(STEMS, reverse=True):
        model = build_model(stem, 1000)
        report = load_inception_v3_weights(model, reference.state_dict())
        assert report.kept_initial == ["AuxLogits.fc_bn.weight", "AuxLogits.fc_bn.bias", "AuxLogits.fc_bn.running_mean",
                                       "AuxLogits.fc_bn.running_var", "AuxLogits.fc_bn.num_batches_tracked"]
        model.eval()
        with torch.no_grad():
            if stem == 299:
                torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
            else:
                assert torch.isfinite(model(torch.randn(1, 3, stem, stem))).all()
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key


def test_parameter_count_is_torchvision_plus_aux_bn() -> None:
    reference = count_parameters(_torchvision_inception())
    model = build_model(299)
    assert count_parameters(model) == reference + 2 * 1000  # BN-auxiliary: weight and bias per class


def test_width_halves_every_conv_respecting_min_depth() -> None:
    full, half = build_model(299), build_model(299, width=0.5, min_depth=40)
    full_convs = {n: m for n, m in full.named_modules() if isinstance(m, torch.nn.Conv2d)}
    half_convs = {n: m for n, m in half.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert full_convs.keys() == half_convs.keys()
    for name, conv in full_convs.items():
        assert half_convs[name].out_channels == max(conv.out_channels // 2, 40), name
    assert half.fc.in_features == half.Mixed_7c.out_channels < full.fc.in_features


def test_unknown_stem_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown stem 100.*\[79, 151, 299\]"):
        build_model(100)


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_too_small_input_names_stem_and_smallest_size(stem: int) -> None:
    model = build_model(stem, **SMALL).eval()
    smallest = min_input_size(STEMS[stem])
    assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, 1000)
    with pytest.raises(ValueError, match=rf"stem {stem}.*at least {smallest}x{smallest}"):
        model(torch.randn(1, 3, smallest - 1, smallest - 1))
    with_aux = min_input_size(STEMS[stem], with_aux=True)  # the aux head's 5x5 conv needs a 17x17 Mixed_6e
    with pytest.raises(ValueError, match=rf"stem {stem}: training with the auxiliary head needs at least {with_aux}"):
        model.train()(torch.randn(2, 3, with_aux - 1, with_aux - 1))


def test_timm_style_interface() -> None:
    model = build_model(79, num_classes=10, **SMALL).eval()
    x = torch.randn(2, 3, 79, 79)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))
    assert [f["module"] for f in model.feature_info][-1] == "Mixed_7c"
    assert model.feature_info[-1]["num_chs"] == model.num_features
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.train()(torch.randn(2, 3, 79, 79))[1].shape == (2, 3)
