"""The ``lowres`` command line: the only module that reads argv.

Each command is a thin layer over a library function, so everything here is also usable from Python.
"""
from __future__ import annotations

import json

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lowres")
def main() -> None:
    """Low-resolution Inception-v3 for object-detection crops (Szegedy et al. 2016, Table 2)."""


@main.command()
@click.option("--width", type=float, default=1.0, show_default=True, help="Width multiplier (TF-slim depth_multiplier).")
@click.option("--min-depth", type=int, default=16, show_default=True, help="Smallest channel count any conv keeps.")
@click.option("--num-classes", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(width: float, min_depth: int, num_classes: int, as_json: bool) -> None:
    """Per stem: input, grid sizes, parameters and forward GFLOPs, measured from the model."""
    from .models.profile import stem_table

    try:
        rows = stem_table(width=width, min_depth=min_depth, num_classes=num_classes)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
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


if __name__ == "__main__":  # python -m lowres.cli (torchrun uses this form)
    main()
