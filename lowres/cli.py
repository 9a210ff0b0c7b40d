"""The ``lowres`` command line: the only module that reads argv (with ``cli_second_stage``: rescore,
export; ``cache_admin``: cache).

Each command is a thin layer over a library function, so everything here is also usable from Python.
Library imports sit inside the commands on purpose: ``lowres --help`` and a mistyped option then cost
``import lowres`` (torch) only, not torchvision, pycocotools and every subpackage as well.
"""
from __future__ import annotations

import json

import click

from . import __version__
from ._cli_guard import GuardedGroup, writable_dir, writable_file
from .models.stems import STEMS


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lowres")
def main() -> None:
    """Low-resolution Inception-v3 for object-detection crops (Szegedy et al. 2016, Table 2)."""
    from ._console import setup_console

    setup_console()


@main.command()
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Width multiplier (TF-slim depth_multiplier).")
@click.option("--min-depth", type=click.IntRange(min=1), default=16, show_default=True,
              help="Smallest channel count any conv keeps.")
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(width: float, min_depth: int, num_classes: int, as_json: bool) -> None:
    """Per stem: input, grid sizes, parameters and forward GFLOPs, measured from the model."""
    from .models.profile import stem_table

    rows = stem_table(width=width, min_depth=min_depth, num_classes=num_classes)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"Inception-v3 trunk, width {width:g}, min_depth {min_depth}, {num_classes} classes "
               "(grid = side of the feature map; FLOPs count a multiply-add as 2)")
    header = ("stem", "input", "grid->Mixed_5b", "grid Mixed_6e", "grid Mixed_7c", "params", "GFLOPs", "vs 299")
    click.echo("| " + " | ".join(header) + " |")
    click.echo("|" + "---|" * len(header))
    for r in rows:
        cells = (r["stem"], r["input"], r["grid_mixed_5b"], r["grid_mixed_6e"], r["grid_mixed_7c"],
                 f"{r['params']:,}", f"{r['gflops']:.2f}", f"{r['flops_vs_299']:.3f}")
        click.echo("| " + " | ".join(str(c) for c in cells) + " |")


@main.command()
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Folder in the coco-mini layout; default: the embedded synthetic set.")
@click.option("--split", default="train", show_default=True)
@click.option("--size", type=click.IntRange(min=8), default=79, show_default=True,
              help="Crop side in pixels (crop.size).")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False), default=None,
              help="COCO results JSON: crop detector boxes, labelled by IoU with the ground truth (data.boxes: "
                   "detections, unless --set data.boxes=both).")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Instances JSON (instead of --data).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image folder (instead of --data).")
@click.option("--background", is_flag=True, default=None, help="data.background: detector boxes with IoU < "
              "data.iou_background become a background class.")
@click.option("--min-size", type=float, default=None, help="data.min_size: skip boxes with a shorter side.")
@click.option("--score-threshold", type=float, default=None, help="data.score_threshold: drop detector boxes "
              "scoring below this.")
@click.option("--top-k", type=int, default=None, help="data.top_k: keep at most K detector boxes per image.")
@click.option("--jitter", type=int, default=None, help="data.jitter: add N jittered copies of every ground-truth "
              "box.")
@click.option("--mode", type=click.Choice(["square", "warp"]), default=None, help="crop.mode.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other data.* or crop.* key, as train's --set (data.iou_positive=0.6, crop.margin=0.1); "
                   "the flags above win over it.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="Bad inputs stop the run, or are counted and reported in the summary.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="data.build_workers: decoding threads per process (under torchrun each local rank also builds "
                   "its own shards).")
@click.option("--storage", type=click.Choice(["auto", "raw", "jpeg"]), default=None,
              help="data.crop_storage: raw uint8 crops (fast, large) or JPEG shards (~10x smaller); auto: raw up "
                   "to 2 GiB.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="Cache root, as train's data.cache_dir (default ~/.cache/lowres): the crops go to CACHE_DIR/crops, "
                   "where `lowres train` looks for them, and the synthetic set (no --data) is generated there.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="Folder for the crop cache and summary_<split>_<size>px.json instead of CACHE_DIR/crops "
                   "(`lowres train` does not look there).")
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal anyway).")
def crops(data: str | None, split: str, size: int, detections: str | None, annotations: str | None,
          images: str | None, background: bool | None, min_size: float | None, score_threshold: float | None,
          top_k: int | None, jitter: int | None, mode: str | None, overrides: tuple[str, ...], on_error: str,
          workers: int | None, storage: str | None, cache_dir: str | None, out_dir: str | None,
          no_progress: bool) -> None:
    """Cut the crops of one split into the on-disk cache (decoding each image once) and summarise them: the
    cache `lowres train` reads for the same data.* and crop.* keys (the flags set those keys, checked as
    train checks them). Under ``torchrun --nproc_per_node N -m lowres.cli crops ...`` the N processes share
    the work."""
    import dataclasses
    from pathlib import Path

    from detection_bridge import synthetic
    from detection_bridge.cache import BuildOptions
    from detection_bridge.summary import build_crops, format_summary

    from ._console import progress_bar
    from .config import Config, load_config
    from .training.data import cache_spec, default_cache_root, split_options

    boxes = "detections" if detections and not any(o.startswith("data.boxes=") for o in overrides) else None
    flags = tuple(f"{key}={value}" for key, value in (
        ("crop.size", size), ("data.boxes", boxes), ("data.background", "true" if background else None),
        ("data.min_size", min_size), ("data.score_threshold", score_threshold), ("data.top_k", top_k),
        ("data.jitter", jitter), ("crop.mode", mode), ("data.build_workers", workers),
        ("data.crop_storage", storage), ("data.cache_dir", cache_dir)) if value is not None)
    cfg = load_config(None, (*overrides, *flags))
    train_root = default_cache_root(cfg)
    out = Path(out_dir) if out_dir is not None else train_root / "crops"
    if data is None and annotations is None:
        data = str(synthetic.generate(train_root / "synthetic-seed0"))  # the set `lowres train` generates
        click.echo(f"note: no --data given: using the embedded synthetic set generated in {data}", err=True)
    env, part, sync = _host_work_group()
    try:
        with progress_bar(not no_progress and part[0] == 0, desc=f"crops {split} {size}px", unit="crop",
                          leave=False) as bar:
            options = dataclasses.replace(split_options(cfg, train=True), on_error=on_error)
            summary = build_crops(data, split, cache_spec(cfg), options, out=out,
                                  detections=detections or cfg.data.detections_file, annotations=annotations,
                                  images=images, build=BuildOptions(workers=cfg.data.build_workers,
                                                                    progress=bar.update, part=part, sync=sync))
    finally:
        _leave_group(env)
    if part[0] == 0:
        click.echo(format_summary(summary))
        if out.resolve() != (train_root / "crops").resolve():
            hint = (f"train with --set data.cache_dir={out.parent}" if out.name == "crops" else
                    "build it with --cache-dir DIR and train with --set data.cache_dir=DIR")
            click.echo(f"note: `lowres train` looks for crop caches in CACHE_DIR/crops (data.cache_dir, default "
                       f"{default_cache_root(Config())}), not in {out}: {hint}", err=True)


def _host_work_group() -> tuple[object, tuple[int, int], object]:
    """Under torchrun: a gloo process group and this process's share of node-local host work."""
    from .training.distributed import node_part, node_sync, setup_distributed

    env = setup_distributed("cpu")
    return env, node_part(env), node_sync(env)


def _leave_group(env: object) -> None:
    from .training.distributed import cleanup_distributed

    cleanup_distributed(env)  # type: ignore[arg-type]


def _command_line() -> str:
    """The command as typed, for provenance (this module is the only one that reads argv)."""
    import sys

    from .provenance import command_line

    return command_line(sys.argv)


def _train_presets_help() -> str:
    from .config import list_presets

    return (f"YAML file or preset name ({', '.join(list_presets())}). Default: with --resume RUN_DIR/config.yaml; "
            "with --data the paper's recipe (paper); with neither, smoke on the synthetic set.")


@main.command()
@click.option("--stem", type=click.Choice([str(s) for s in sorted(STEMS)]), default=None,
              help="Stem / input size (overrides the config's model.stem).")
@click.option("--config", "config_file", default=None, help=_train_presets_help())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set optim.lr=0.01 (repeatable; YAML scalars).")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="COCO-layout (coco-mini) or ImageNet-layout folder; without it the generated synthetic set is used.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="Run folder (required unless --print-config).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None,
              help="bf16 = autocast with bfloat16 (overrides train.precision).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (sets train.compile; timm's "
              "--torchcompile): faster steps after a first one that compiles.")
@click.option("--no-progress", is_flag=True, help="No progress bars (they are shown only on a terminal anyway; "
              "without one a line is logged every train.log_every steps).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="train.epochs.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=None, help="train.batch_size (per process).")
@click.option("--lr", type=float, default=None, help="optim.lr.")
@click.option("--seed", type=int, default=None, help="train.seed.")
@click.option("--device", default=None, help="train.device: auto, cpu, cuda, cuda:N.")
@click.option("-j", "--workers", type=click.IntRange(min=0), default=None, help="data.num_workers (loader workers).")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
def train(stem: str | None, config_file: str | None, overrides: tuple[str, ...], data: str | None, out_dir: str | None,
          precision: str | None, resume: bool, compile_: bool, no_progress: bool, epochs: int | None,
          batch_size: int | None, lr: float | None, seed: int | None, device: str | None, workers: int | None,
          print_config: bool) -> None:
    """Train a stem on crops (torchrun-ready). Writes config.yaml, provenance.json, train.log, metrics.jsonl,
    scalars.csv (and TensorBoard events in tb/ when installed), last.pt/best.pt, checkpoints/ and
    val_metrics.json to --out, logs a line per epoch and prints the final epoch's metrics as JSON.
    Ctrl-C stops after the current step with a checkpoint; --resume continues it.

    The flags timm's train.py has (--epochs, -b, --lr, --seed, --device, -j) set their config keys and win
    over --set, as --stem and --precision do."""
    from pathlib import Path

    import yaml

    from .config import default_train_config, load_config
    from .training.run import check_run_folder, train as run_training

    if out_dir is None and not print_config:
        raise click.UsageError("Missing option '--out' (the run folder).")
    if resume and not print_config:
        check_run_folder(Path(out_dir), resume=True)  # a mistyped folder: say so, never start a new run there
    config_file, note = default_train_config(config_file, data=data, out_dir=out_dir, resume=resume)
    run_config = out_dir is not None and config_file == str(Path(out_dir) / "config.yaml")
    if data is not None:
        data = str(Path(data).expanduser().resolve())  # the run folder records where the data really was
    if data is not None and not print_config:  # before the run folder exists: a wrong --data creates nothing
        from detection_bridge.layout import check_data_dir

        check_data_dir(data)
    flags = tuple(f"{key}={value}" for key, value in (
        ("train.precision", precision), ("train.compile", "true" if compile_ else None), ("train.epochs", epochs),
        ("train.batch_size", batch_size), ("optim.lr", lr), ("train.seed", seed), ("train.device", device),
        ("data.num_workers", workers)) if value is not None)
    cfg = load_config(config_file, (*overrides, *flags), stem=int(stem) if stem else None, data=data,
                      complete=run_config)  # a truncated run config must not fall back to defaults
    if print_config:
        click.echo(f"# resolved from {config_file}" + (f" + {len(overrides) + len(flags)} override(s)"
                                                      if overrides or flags else "") + "\n"
                   + yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)
        return
    if note:
        from .config import describe

        click.echo(note.format(summary=describe(cfg)), err=True)
    summary = run_training(cfg, out_dir, resume=resume, progress=not no_progress, command=_command_line())
    if summary.get("rank", 0) == 0:  # under torchrun only rank 0 reports
        click.echo(json.dumps({k: summary[k] for k in ("out_dir", "epochs", "best_top1", "final", "wall_seconds")},
                              indent=2))


@main.command("eval")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="COCO- or ImageNet-layout folder (default: the checkpoint's training data).")
@click.option("--split", default="val", show_default=True)
@click.option("--boxes", type=click.Choice(["gt", "detections", "both"]), default="gt", show_default=True,
              help="Ground-truth boxes, the detector's boxes labelled by IoU (background if trained with it), or both.")
@click.option("--detections", "--detections-file", "detections_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="COCO results JSON, as rescore's --detections (default: DATA/detections/*_SPLIT.json; "
                                 "--detections-file is the older spelling).")
@click.option("--no-ema", is_flag=True, help="Evaluate the raw weights instead of their moving average.")
@click.option("--batch-size", type=int, default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (worth it for large splits).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="Metrics JSON to write (default: eval_SPLIT.json beside the checkpoint).")
def eval_cmd(checkpoint: str, data: str | None, split: str, boxes: str, detections_file: str | None, no_ema: bool,
             batch_size: int | None, device: str, compile_: bool, out_file: str | None) -> None:
    """Top-1/top-5, balanced accuracy, per size bucket, per class, confusion matrix, bootstrap CI of a checkpoint."""
    from pathlib import Path

    from ._cli_guard import check_writable_dir
    from .training.evaluate import evaluate_checkpoint

    if out_file is None:
        out_file = str(Path(checkpoint).parent / f"eval_{split}.json")
        check_writable_dir(Path(out_file).parent)  # before any work, as an --out given would be
    m = evaluate_checkpoint(checkpoint, data=data, split=split, boxes=boxes, detections_file=detections_file,
                            use_ema=not no_ema, batch_size=batch_size, device=device, out=out_file,
                            compile=compile_)

    def fmt(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value:.4f}"

    lo, hi = m["top1_ci"]
    click.echo(f"{split} ({m['boxes']} boxes, {m['count']} crops, {m['weights']} weights): top-1 {fmt(m['top1'])} "
               f"[{fmt(lo)}, {fmt(hi)}], top-5 {fmt(m['top5'])}, balanced {fmt(m['balanced_accuracy'])} -> {out_file}")


@main.command()
@click.option("--preset", default="smoke", show_default=True,
              help="Bench preset: smoke | cpu | imagenette | imagenette_gpu | paper (configs/bench_NAME.yaml) "
                   "or a YAML file.")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="COCO- or ImageNet-layout folder (train on train, report on val); default: the generated synthetic set.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Training seeds per variant (preset's default: 1).")
@click.option("--variants", default=None, metavar="LIST",
              help="Comma-separated subset of 299,151,79,naive-79,upsample-79 (default: the preset's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override the shared training config (train.epochs=3) or the bench section "
                   "(bench.throughput.batch=16).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, callback=writable_dir,
              help="Report folder: report.md, report.json, PNG plots, runs/<variant>/seed<k>/.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def bench(preset: str, data: str | None, seeds: int | None, variants: str | None, overrides: tuple[str, ...],
          out_dir: str, no_progress: bool) -> None:
    """Table 2 on crops: train and evaluate the 299, 151 and 79 stems, naive-79 and upsample-79 alike, and
    write report.md / report.json / plots. Re-running the same command resumes: finished variants are reused."""
    import shlex
    from pathlib import Path

    from .bench import load_bench_preset, run_bench

    args = ["lowres", "bench", "--preset", preset, *(["--data", data] if data else []),
            *(["--seeds", str(seeds)] if seeds else []), *(["--variants", variants] if variants else []),
            *[a for o in overrides for a in ("--set", o)], "--out", out_dir]
    spec = load_bench_preset(preset, overrides, seeds=seeds,
                             variants=[v.strip() for v in variants.split(",")] if variants else None)
    report = run_bench(spec, out_dir, data=data, command=shlex.join(args), progress=not no_progress)
    for row in report["rows"]:
        lo, hi = row["top1_ci"]
        click.echo(f"{row['variant']:>12}: top-1 {100 * row['top1']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]  "
                   f"{row['gflops']:.3f} GFLOPs  {row['images_per_s']:.0f} img/s (median; rounds "
                   f"{row['images_per_s_spread'][0]:.0f}-{row['images_per_s_spread'][1]:.0f})")
    click.echo(f"report: {Path(out_dir) / 'report.md'}")


def _register_commands() -> None:
    """Commands kept in their own modules (cli.py holds the group, training, evaluation and the bench)."""
    from .cache_admin import cache_cli
    from .cli_second_stage import export, rescore
    from .cli_weights import weights_cli

    main.add_command(cache_cli, "cache")
    main.add_command(weights_cli, "weights")
    main.add_command(rescore)
    main.add_command(export)


_register_commands()


if __name__ == "__main__":  # python -m lowres.cli (torchrun uses this form)
    main()
