"""``lowres rescore`` and ``lowres export``: the second stage's commands (registered on the group by
:mod:`lowres.cli`; library imports inside the commands, as there)."""
from __future__ import annotations

import click

from ._cli_guard import writable_file


def _checkpoint_data(loaded: object, checkpoint: str) -> str:
    """``rescore`` without --data/--images: the checkpoint's training data folder, saying so."""
    from .training.evaluate import checkpoint_data_path

    path = checkpoint_data_path(loaded.config.data.path, loaded.provenance, checkpoint)  # type: ignore[attr-defined]
    if path is None:
        raise click.UsageError(f"{checkpoint} was trained on the synthetic set: give --data DIR [--split S] or "
                               "--images DIR [--annotations FILE]")
    return path


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A `lowres train` checkpoint (its EMA weights unless --no-ema).")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False), required=True,
              help="COCO results JSON from any detector: image_id, category_id, bbox [x,y,w,h], score.")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="coco-mini-layout folder (annotations/instances_SPLIT.json, images/SPLIT/); default: the "
                   "checkpoint's training data, unless --images is given.")
@click.option("--split", default="val", show_default=True)
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image folder; without --annotations, files are found by id (000000000139.jpg -> 139).")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="COCO instances JSON for --images: finds files and enables AP before/after.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, callback=writable_file,
              help="Rescored COCO results JSON (with --fusion all: OUT's stem + .RULE.json per rule).")
@click.option("--fusion", "fusion", type=click.Choice(["replace", "product", "max", "auto", "all"]), multiple=True,
              default=("product",), show_default=True,
              help="How classifier probabilities and detector scores combine (lowres.rcnn.fusion); repeatable. "
                   "all = replace, product, max; auto = fitted by COCO AP on --calibrate-split.")
@click.option("--max-area", default=None, metavar="AREA",
              help="Rescore only boxes below AREA (small = 32^2, medium = 96^2, or square pixels); larger boxes keep "
                   "the detector's label and score. With auto: the size bands fitted.")
@click.option("--calibrate-split", default="train", show_default=True,
              help="auto: the --data split whose ground truth fits the fusion, with the detector's results there "
                   "(NAME_SPLIT.json beside --detections NAME_OTHER.json).")
@click.option("--calibrate-detections", type=click.Path(dir_okay=False), default=None,
              help="auto: the calibration split's detections file, instead of NAME_SPLIT.json.")
@click.option("--fusion-params", type=click.Path(dir_okay=False), default=None,
              help="auto: where the fitted parameters go (default: beside the checkpoint, STEM.fusion.NAME.json).")
@click.option("--crossfit", type=click.IntRange(min=0), default=0, show_default=True, metavar="K",
              help="Also write auto_crossfit: auto fitted on the evaluated split itself, K folds over its images, "
                   "each fold's boxes fused by the rule fitted on the others (needs its ground truth; 0 = off).")
@click.option("--background-threshold", type=float, default=0.5, show_default=True,
              help="Drop detections whose background probability exceeds this (models with a background class; "
                   ">= 1 disables).")
@click.option("--skip-unknown", is_flag=True, help="Count and skip detections for image ids with no image.")
@click.option("--batch-images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images decoded and classified together.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Crops per model call (memory bound).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto = cuda when available, else cpu.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of their moving average.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="Also write the summary as JSON.")
@click.option("--label-map", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON {detector label: COCO category id} (or a list indexed by label) when the detections' "
                   "category_id are not COCO ids; outputs are written in COCO ids.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the classifier (worth it for many images).")
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal anyway).")
def rescore(checkpoint: str, detections: str, data: str | None, split: str, images: str | None,
            annotations: str | None, out_file: str, fusion: tuple[str, ...], max_area: str | None,
            calibrate_split: str, calibrate_detections: str | None, fusion_params: str | None, crossfit: int,
            background_threshold: float, skip_unknown: bool, batch_images: int, chunk_size: int, precision: str,
            device: str, no_ema: bool, metrics_out: str | None, label_map: str | None, compile_: bool,
            no_progress: bool) -> None:
    """Rescore a detector's COCO results with a second-stage classifier; with ground truth, print COCO AP
    (AP, AP50, AP75, APs, APm, APl) before and after, per fusion rule."""
    import dataclasses

    from ._atomic import atomic_write_json
    from ._console import progress_bar
    from .builder import load_model
    from .rcnn import SecondStage, StageOptions
    from .rcnn.calibrate import Calibration, rescore_fusions
    from .rcnn.files import ImageSource, RescoreOptions, load_label_map, metrics_table, rescore_file
    from .runtime import resolve_device

    if data is not None and (images is not None or annotations is not None):
        raise click.UsageError("give either --data DIR [--split S] or --images DIR [--annotations FILE], not both")
    if annotations is not None and images is None:
        raise click.UsageError("--annotations needs --images")
    threshold = None if background_threshold >= 1 else background_threshold
    if "auto" in fusion and label_map is not None:
        raise click.UsageError("--fusion auto calibrates on COCO category ids: it does not take --label-map yet")
    mapping = load_label_map(label_map) if label_map else None
    dev = resolve_device(device)
    loaded = load_model(checkpoint, use_ema=not no_ema, device=dev)  # read once: the data path comes from it too
    if data is None and images is None:
        data = _checkpoint_data(loaded, checkpoint)
    if "auto" in fusion and data is None:
        raise click.UsageError("--fusion auto needs --data: the calibration split's ground truth is found there")
    if crossfit == 1:
        raise click.UsageError("--crossfit K needs K >= 2 folds (0 = off)")
    stage = SecondStage.from_loaded(loaded, dev, StageOptions(chunk_size=chunk_size, precision=precision,
                                                              compile=compile_))
    options = RescoreOptions(background_threshold=threshold, batch_images=batch_images,
                             on_unknown="skip" if skip_unknown else "raise", label_map=mapping)
    calibration = Calibration(checkpoint, detections, data=data, split=calibrate_split,
                              detections_file=calibrate_detections, params_out=fusion_params)
    with progress_bar(not no_progress and "auto" in fusion, desc="calibrate", unit="img") as bar:
        fusions = rescore_fusions(stage, fusion, calibration, max_area=max_area,
                                  options=dataclasses.replace(options, progress=bar.update))
    with progress_bar(not no_progress, desc="rescore", unit="img") as bar:
        summary = rescore_file(stage, detections, out_file, fusions, ImageSource(data, split, images, annotations),
                               dataclasses.replace(options, progress=bar.update), crossfit=crossfit)
    kept = ", ".join(f"{n} ({rule})" for rule, n in summary["kept"].items())
    click.echo(f"{summary['detections']} detections on {summary['images']} images; kept {kept}; "
               f"skipped {summary['skipped'] or 'none'}")
    for rule, path in summary["outputs"].items():
        click.echo(f"{rule}: {path}")
    if "metrics" in summary:
        click.echo(metrics_table(summary["metrics"]))
    if metrics_out:
        atomic_write_json(metrics_out, summary, indent=2)


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), required=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, callback=writable_file,
              help="Model file; its metadata is also written to OUT.json.")
@click.option("--softmax", is_flag=True, help="Output probabilities instead of logits.")
@click.option("--no-ema", is_flag=True, help="Export the raw weights instead of their moving average.")
@click.option("--opset", type=int, default=18, show_default=True,
              help="ONNX opset (18 up to the installed onnx's newest).")
def export(checkpoint: str, fmt: str, out_file: str, softmax: bool, no_ema: bool, opset: int) -> None:
    """Export the eval-mode classifier (input: normalised crops N x 3 x S x S, dynamic N) with its metadata."""
    from .export import export_checkpoint, load_metadata

    path = export_checkpoint(checkpoint, out_file, fmt, softmax=softmax, use_ema=not no_ema, opset=opset)
    meta = load_metadata(path)
    click.echo(f"{fmt}: {path} (stem {meta['stem']}, {meta['num_classes']} classes, output {meta['output']['name']}; "
               f"metadata also in {path}.json)")
