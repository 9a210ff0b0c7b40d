"""What only a GPU can show: the device transforms, bf16 autocast and the pinned-memory loader on CUDA.

Marked ``cuda`` (``pytest -m cuda`` runs these alone; ``benchmarks/gpu_check.py`` runs them first) and skipped,
saying why, where no CUDA GPU is present. The references are the CPU paths, themselves tested against the old
worker pipelines (test_device_transforms.py), so CUDA is held to the CPU within float tolerance.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection_bridge.color import ColorJitter, identity_params
from lowres.device_transforms import model_inputs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() "
                                 "is False): these tests hold the CUDA path to the CPU one")]
CUDA = torch.device("cuda") if torch.cuda.is_available() else None


def _batch(n: int, size: int, seed: int, *, jitter: bool, random_order: bool = True) -> tuple:
    """Smooth uint8 crops (bilinear blow-ups of random 6x6 colours) with labels, indices and jitter factors."""
    rng = np.random.default_rng(seed)
    crops = np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
                                 .resize((size, size), Image.BILINEAR)) for _ in range(n)])
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    batch = (images, torch.arange(n) % 5, torch.arange(n))
    if not jitter:
        return batch
    params = np.stack([ColorJitter(0.4, 0.1, p=1.0, random_order=random_order).draw(rng) for _ in range(n)])
    params[0] = identity_params()
    return (*batch, torch.from_numpy(params))


@pytest.mark.parametrize("random_order", [True, False], ids=["coco-order", "imagefolder-order"])
def test_colour_jitter_and_normalisation_on_cuda_equal_the_cpu(random_order: bool) -> None:
    batch = _batch(16, 79, 1, jitter=True, random_order=random_order)
    cpu, cpu_labels = model_inputs(batch, torch.device("cpu"))
    gpu, gpu_labels = model_inputs(batch, CUDA)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    assert (gpu.cpu() - cpu).abs().max() < 1e-4  # float32 on two devices: rounding of hue's arithmetic only


def test_upsample_and_channels_last_on_cuda_equal_the_cpu() -> None:
    batch = _batch(4, 79, 2, jitter=False)
    cpu, _ = model_inputs(batch, torch.device("cpu"), channels_last=True, size=299)
    gpu, _ = model_inputs(batch, CUDA, channels_last=True, size=299)
    assert gpu.shape == (4, 3, 299, 299) and gpu.is_contiguous(memory_format=torch.channels_last)
    assert (gpu.cpu() - cpu).abs().max() < 1e-5


def test_bf16_autocast_on_cuda_runs_convolutions_in_bf16_and_the_loss_in_fp32() -> None:
    from lowres import build_model
    from lowres.runtime import autocast
    from lowres.training.recipe import inception_loss

    model = build_model(79, 10, width=0.125, min_depth=8, aux_logits=True)
    model = model.to(CUDA, memory_format=torch.channels_last).train()
    x = torch.randn(4, 3, 79, 79, device=CUDA).contiguous(memory_format=torch.channels_last)
    with autocast(CUDA, "bf16"):
        logits, aux = model(x)
    assert logits.dtype == aux.dtype == torch.bfloat16
    loss, _ = inception_loss((logits, aux), torch.arange(4, device=CUDA), label_smoothing=0.1, aux_weight=0.4)
    assert loss.dtype == torch.float32  # inception_loss upcasts the logits
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # the weights stay fp32
    with autocast(CUDA, "fp32"):
        assert model.eval()(x).dtype == torch.float32


def test_the_training_loader_pins_memory_on_cuda(tiny_config) -> None:
    from lowres.training.data import load_split_data, train_loader
    from lowres.training.distributed import DistEnv, ResumableSampler

    cfg = tiny_config("data.max_train=16", "train.batch_size=8")
    env = DistEnv(device=CUDA)
    split = load_split_data(_synthetic(cfg, env), "train", cfg, train=True, env=env)
    loader = train_loader(split, ResumableSampler(split.dataset, env=env, seed=0), cfg)
    assert loader.pin_memory
    batch = next(iter(loader))
    assert batch[0].dtype == torch.uint8 and batch[0].is_pinned()
    x, _ = model_inputs(batch, CUDA)  # a non-blocking copy from pinned memory
    torch.cuda.synchronize()
    ref, _ = model_inputs(batch, torch.device("cpu"))
    assert (x.cpu() - ref).abs().max() < 1e-4


def _synthetic(cfg, env):  # type: ignore[no-untyped-def]
    from lowres.training.data import resolve_data_dir

    return resolve_data_dir(cfg, env=env)
