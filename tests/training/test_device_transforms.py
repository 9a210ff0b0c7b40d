"""Model inputs made on the device equal the old CPU float pipelines on the same crops and the same jitter factors.

The references are written here, apart from the code under test: the COCO-crop path's old colour jitter was
albumentations' ``ColorJitter`` (its ``*_torchvision`` functions on uint8, in a random order, then
``Normalize``); the ImageNet-layout path's was PIL's enhancers in a fixed order then ``x / 127.5 - 1``; the
upsample-79 resize was a bilinear resize of the normalised tensor (written here in numpy).
"""
from __future__ import annotations

import colorsys

import albumentations as A
import albumentations.augmentations.pixel.functional as albu
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from detection_bridge.color import ColorJitter, identity_params
from lowres.device_transforms import model_inputs

_ALBU_OPS = (albu.adjust_brightness_torchvision, albu.adjust_contrast_torchvision,
             albu.adjust_saturation_torchvision, albu.adjust_hue_torchvision)


def _crops(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth natural-looking uint8 crops (a bilinear blow-up of random 6x6 colours), (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
                                .resize((size, size), Image.BILINEAR)) for _ in range(n)])


def _batch(crops: np.ndarray, params: np.ndarray | None) -> tuple:
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    labels, index = torch.zeros(len(crops), dtype=torch.int64), torch.arange(len(crops))
    return (images, labels, index) if params is None else (images, labels, index, torch.from_numpy(params))


def _old_albumentations(crop: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The old worker path for COCO crops: uint8 colour ops in the sample's order, then Normalize(0.5, 0.5)."""
    x = crop.copy()
    for k in p[4:].astype(int):
        x = _ALBU_OPS[k](x, float(p[k]))
    return A.Normalize(mean=(0.5,) * 3, std=(0.5,) * 3, max_pixel_value=255.0)(image=x)["image"].transpose(2, 0, 1)


def _hue_reference(crop: np.ndarray, shift: float) -> np.ndarray:
    """Exact float hue rotation, pixel by pixel with Python's colorsys, in [0, 1]."""
    out = np.empty(crop.shape, np.float64)
    for idx in np.ndindex(crop.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(crop[idx] / 255.0))
        out[idx] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return out.transpose(2, 0, 1)


@pytest.mark.parametrize("size", [31, 79])
def test_coco_crop_jitter_equals_the_old_albumentations_path(size: int) -> None:
    crops = _crops(12, size, size)
    rng = np.random.default_rng(1)
    params = np.stack([ColorJitter(0.4, 0.1, p=1.0).draw(rng) for _ in crops])
    params[0] = identity_params()
    assert len({tuple(p[4:]) for p in params}) > 3  # several orders of the four operations in one batch
    ours, _ = model_inputs(_batch(crops, params), torch.device("cpu"))
    ref = torch.from_numpy(np.stack([_old_albumentations(c, p) for c, p in zip(crops, params)]))
    assert ours.dtype == torch.float32 and ours.shape == (12, 3, size, size)
    assert torch.allclose(ours[0], ref[0], atol=1e-6)  # no jitter: the old normalisation
    # The old path rounds to uint8 after every operation and quantises hue to OpenCV's 2-degree steps, so
    # pixels differ by a few levels (2/255 in these [-1, 1] units is one level); on average by under one.
    diff = (ours - ref).abs() * 127.5
    assert diff.mean() < 1.5 and diff.max() < 16
    no_hue = params.copy()
    no_hue[:, 3] = 0
    ours, _ = model_inputs(_batch(crops, no_hue), torch.device("cpu"))
    ref = torch.from_numpy(np.stack([_old_albumentations(c, p) for c, p in zip(crops, no_hue)]))
    diff = (ours - ref).abs() * 127.5
    assert diff.mean() < 1.2 and diff.max() <= 4  # brightness, contrast, saturation: rounding only


def test_hue_rotation_is_exact_in_float() -> None:
    crops = _crops(4, 9, 3)
    params = np.stack([identity_params()] * 4)
    params[:, 3] = [0.1, -0.05, 0.5, 0.013]
    ours, _ = model_inputs(_batch(crops, params), torch.device("cpu"))
    ref = np.stack([_hue_reference(c, p[3]) for c, p in zip(crops, params)]) * 2 - 1
    assert np.abs(ours.numpy() - ref).max() < 1e-5


def _old_pil(crop: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The old ImageNet-layout worker path: PIL's enhancers (brightness, contrast, colour, then HSV hue), then
    ``x / 127.5 - 1``."""
    image = Image.fromarray(crop)
    for enhancer, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), p[:3]):
        image = enhancer(image).enhance(float(factor))
    h, s, v = image.convert("HSV").split()
    h = Image.fromarray((np.asarray(h, dtype=np.int16) + int(round(p[3] * 255))).astype(np.uint8), "L")
    image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0


def test_imagefolder_jitter_equals_the_old_pil_path() -> None:
    crops = _crops(10, 47, 7)
    rng = np.random.default_rng(2)
    params = np.stack([ColorJitter(0.4, 0.05, p=1.0, random_order=False).draw(rng) for _ in crops])
    assert (params[:, 4:] == np.arange(4)).all()
    ours, _ = model_inputs(_batch(crops, params), torch.device("cpu"))
    ref = torch.from_numpy(np.stack([_old_pil(c, p) for c, p in zip(crops, params)]))
    diff = (ours - ref).abs() * 127.5  # PIL rounds after each step and keeps hue in 256 steps
    assert diff.mean() < 1.5 and diff.max() < 16


def _bilinear_reference(x: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of ``(C, H, W)`` (what F.interpolate(align_corners=False) defines)."""
    def weights(n_in: int) -> np.ndarray:
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1, w = np.minimum(i0 + 1, n_in - 1), src - np.floor(src)
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), i0), 1 - w)
        np.add.at(m, (np.arange(size), i1), w)
        return m

    rows, cols = weights(x.shape[1]), weights(x.shape[2])
    return rows @ x @ cols.T  # (size, H) @ (C, H, W) @ (W, size), channel by channel


def test_upsample_79_on_the_device_equals_the_old_cpu_resize() -> None:
    crops = _crops(3, 79, 11)
    ours, _ = model_inputs(_batch(crops, None), torch.device("cpu"), size=299, channels_last=True)
    assert ours.shape == (3, 3, 299, 299) and ours.is_contiguous(memory_format=torch.channels_last)
    normalised = crops.transpose(0, 3, 1, 2) / 127.5 - 1.0  # the old path resized the normalised tensor
    ref = np.stack([_bilinear_reference(x, 299) for x in normalised])
    assert np.abs(ours.numpy() - ref).max() < 1e-5


def test_eval_batches_are_only_normalised_and_float_batches_are_refused() -> None:
    crops = _crops(2, 21, 5)
    ours, labels = model_inputs(_batch(crops, None), torch.device("cpu"))
    assert torch.allclose(ours, torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32)) / 127.5 - 1, atol=1e-6)
    assert labels.dtype == torch.int64
    with pytest.raises(TypeError, match="must be uint8"):
        model_inputs((ours, labels), torch.device("cpu"))


def _previous_model_inputs(images: torch.Tensor, params: torch.Tensor | None, size: int | None) -> torch.Tensor:
    """model_inputs as it was before the in-place rewrite (commit c56efa8): out-of-place operations, each applied
    to the gathered samples that change; the faster path must give the same samples."""
    from detection_bridge import color

    def grey(x):
        r, g, b = x.unbind(dim=1)
        return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)

    ops = (lambda x, f: (x * f).clamp_(0, 1),
           lambda x, f: (x * f + grey(x).mean(dim=(1, 2, 3), keepdim=True) * (1 - f)).clamp_(0, 1),
           lambda x, f: (x * f + grey(x) * (1 - f)).clamp_(0, 1),
           color._hue)
    x = images.float().div_(255.0)
    if params is not None:
        order = params[:, 4:].round().long()
        changes = torch.cat([params[:, :3] != 1.0, params[:, 3:4] != 0.0], dim=1)
        for slot in range(4):
            for k, op in enumerate(ops):
                idx = ((order[:, slot] == k) & changes[:, k]).nonzero().flatten()
                if len(idx):
                    f = params[idx, k]
                    x.index_copy_(0, idx, op(x.index_select(0, idx), f if k == 3 else f.view(-1, 1, 1, 1)))
    x = (x - 0.5) / 0.5
    if size is not None:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


@pytest.mark.parametrize("random_order, hue, p, size", [
    (False, 0.0, 0.5, None),   # the Imagenette preset's jitter (fixed order, no hue, half the samples)
    (False, 0.05, 1.0, None),  # every sample, with hue
    (True, 0.1, 0.8, None),    # COCO crops: random order, so most slots touch a few samples only
    (True, 0.0, 0.5, 53),      # with the upsample resize
])
def test_in_place_inputs_equal_the_previous_pipeline(random_order, hue, p, size):
    crops = _crops(32, 37, 13)
    rng = np.random.default_rng(4)
    params = np.stack([ColorJitter(0.4, hue, p=p, random_order=random_order).draw(rng) for _ in crops])
    batch = _batch(crops, params)
    ours, _ = model_inputs(batch, torch.device("cpu"), channels_last=True, size=size)
    ref = _previous_model_inputs(batch[0], batch[3], size)
    assert ours.shape == ref.shape and ours.is_contiguous(memory_format=torch.channels_last)
    # the same samples: only the order of a few float sums (the grey level's mean) may differ
    assert torch.allclose(ours, ref, rtol=0, atol=2e-6), (ours - ref).abs().max()
    assert torch.equal(batch[0], torch.from_numpy(crops).permute(0, 3, 1, 2))  # the loader's batch is not touched


def test_bf16_inputs_are_what_autocast_gives_the_first_convolution():
    from lowres import build_model
    from lowres.runtime import autocast, input_dtype

    crops = _crops(4, 79, 17)
    rng = np.random.default_rng(5)
    batch = _batch(crops, np.stack([ColorJitter(0.4, 0.0, p=1.0, random_order=False).draw(rng) for _ in crops]))
    cpu = torch.device("cpu")
    full, _ = model_inputs(batch, cpu, channels_last=True)
    half, _ = model_inputs(batch, cpu, channels_last=True, dtype=input_dtype("bf16"))
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(half, full.to(torch.bfloat16)) and input_dtype("fp32") is None
    torch.manual_seed(0)
    model = build_model(79, 10, width=0.125, min_depth=8).eval().to(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(cpu, "bf16"):
        assert torch.equal(model(full), model(half))  # the same numbers reach the network
