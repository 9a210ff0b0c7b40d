"""Export a trained classifier to TorchScript or ONNX, with a dynamic batch dimension and its metadata.

The exported graph is the eval-mode model only: input ``crops`` ``(N, 3, S, S)`` float32, already cut and
normalised as the metadata's ``geometry`` says (``(rgb in [0, 1] - mean) / std``, out-of-image pixels = mean;
:func:`lowres.rcnn.roi_crops` or the bridge's cropper produce them), output ``logits`` ``(N, C)`` or, with
``softmax=True``, ``probabilities``. Cropping is not in the graph: ``roi_align`` with adaptive sampling has no
portable ONNX equivalent, and deployments usually crop with their own image pipeline.

Metadata (stem, input size, class names and COCO category ids, background, geometry, output kind) is
stored inside the file (TorchScript ``_extra_files["lowres.json"]``; ONNX ``metadata_props["lowres"]``) and
beside it as ``FILE.json``. Both files are written atomically.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from ._atomic import atomic_write_bytes, atomic_write_json
from .builder import load_model
from .errors import InputError

__all__ = ["FORMATS", "ExportableClassifier", "export_model", "export_checkpoint", "export_metadata", "load_metadata"]

FORMATS = ("torchscript", "onnx")
METADATA_KEY = "lowres"
DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch's exporter implements opset >= 18; lower ones are a down-conversion that can fail silently


def check_opset(opset: int) -> None:
    """Refuse, before any work, an ONNX opset this exporter cannot produce exactly."""
    import onnx

    highest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= highest:
        raise InputError(f"ONNX opset {opset!r} is not supported: choose {MIN_OPSET}..{highest} (torch's exporter "
                         f"builds opset {MIN_OPSET}+ natively; the installed onnx knows up to {highest})")


class ExportableClassifier(nn.Module):
    """The eval-mode model, optionally followed by a softmax: exactly what the exported graph computes."""

    def __init__(self, model: nn.Module, softmax: bool = False) -> None:
        super().__init__()
        self.model, self.softmax = model.eval(), bool(softmax)

    def forward(self, crops: Tensor) -> Tensor:
        logits = self.model(crops)  # N x C
        return logits.softmax(dim=1) if self.softmax else logits


def export_metadata(model: nn.Module, category_map: Any, geometry: Any, *, softmax: bool, fmt: str,
                    input_size: int | None = None, crop_size: int | None = None) -> dict[str, Any]:
    """The JSON that says how to feed the exported model and what its outputs mean.

    ``input_size`` (default: the stem's) is the side the model takes; ``crop_size`` the side to cut from the
    image before a bilinear resize to ``input_size`` (they differ only for upsample-79 checkpoints).
    """
    size = int(input_size or getattr(model, "stem"))
    return {"format": fmt, "lowres_version": __version__, "stem": int(getattr(model, "stem")), "input_size": size,
            "crop_size": int(crop_size or size),
            "width": getattr(model, "width", None), "num_classes": category_map.num_classes,
            "class_names": category_map.names, "category_map": category_map.to_dict(),
            "background_label": category_map.background_label, "geometry": geometry.to_dict(),
            "input": {"name": "crops", "shape": ["batch", 3, size, size], "dtype": "float32",
                      "normalisation": "(rgb in [0, 1] - geometry.mean) / geometry.std"},
            "output": {"name": "probabilities" if softmax else "logits", "shape": ["batch", category_map.num_classes]}}


def _export_torchscript(module: ExportableClassifier, example: Tensor, meta_json: str) -> bytes:
    """Trace (the eval forward has no data-dependent control flow); the traced graph is batch-polymorphic.
    Serialised in memory: torch.jit.save writing to a full disk aborts the process from C++."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={f"{METADATA_KEY}.json": meta_json})
    return buffer.getvalue()


def _export_onnx(module: ExportableClassifier, example: Tensor, meta_json: str, opset: int) -> bytes:
    """torch.export-based exporter with a symbolic batch dimension; metadata goes into ``metadata_props``."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    output = "probabilities" if module.softmax else "logits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["crops"], output_names=[output],
                                    dynamic_shapes={"crops": {0: batch}}, opset_version=opset, external_data=False,
                                    verbose=False)
    proto = program.model_proto
    produced = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if produced != opset:
        raise InputError(f"the ONNX exporter produced opset {produced}, not the requested {opset}")
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta_json
    return proto.SerializeToString()


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str, *, category_map: Any, geometry: Any,
                 softmax: bool = False, opset: int = DEFAULT_OPSET, input_size: int | None = None,
                 crop_size: int | None = None) -> Path:
    """Export ``model`` (a lowres model) to ``out`` in ``fmt``; writes ``out`` and ``out.json`` atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        check_opset(opset)
    module = ExportableClassifier(model, softmax).cpu().float()
    size = int(input_size or getattr(model, "stem"))
    example = torch.zeros(2, 3, size, size)  # batch 2: a batch of 1 would let the exporter specialise it
    meta = export_metadata(model, category_map, geometry, softmax=softmax, fmt=fmt, input_size=size,
                           crop_size=crop_size)
    meta_json = json.dumps(meta)
    out = Path(out)
    data = (_export_torchscript(module, example, meta_json) if fmt == "torchscript"
            else _export_onnx(module, example, meta_json, opset))
    atomic_write_bytes(out, data)
    atomic_write_json(out.with_name(out.name + ".json"), meta, indent=1)
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, fmt: str, *, softmax: bool = False,
                      use_ema: bool = True, opset: int = DEFAULT_OPSET) -> Path:
    """:func:`export_model` for a ``lowres train`` checkpoint (:func:`lowres.builder.load_model`: its EMA weights
    by default, with the crop and input sizes it was trained with)."""
    if fmt == "onnx":
        check_opset(opset)  # before loading anything
    loaded = load_model(checkpoint, use_ema=use_ema)
    return export_model(loaded.model, out, fmt, category_map=loaded.category_map, geometry=loaded.geometry,
                        softmax=softmax, opset=opset, input_size=loaded.input_size, crop_size=loaded.crop_size)


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored inside an exported file (TorchScript or ONNX), read without running it."""
    path = Path(path)
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        for entry in proto.metadata_props:
            if entry.key == METADATA_KEY:
                return json.loads(entry.value)
    except Exception:  # not an ONNX file: try TorchScript
        pass
    files = {f"{METADATA_KEY}.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    if not files[f"{METADATA_KEY}.json"]:
        raise InputError(f"{path} holds no lowres metadata")
    return json.loads(files[f"{METADATA_KEY}.json"])
