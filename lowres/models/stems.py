"""The three stems of the paper's Table 2: the only place where the 79, 151 and 299 networks differ.

Szegedy et al. 2016, section 9: "299x299 receptive field with stride 2 and maximum pooling after the
first layer"; "151x151 receptive field with stride 1 and maximum pooling after the first layer"; "79x79
receptive field with stride 1 and without pooling after the first layer". Everything after the stem is
the same trunk, so the three networks share every parameter shape and cost almost the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StemSpec:
    """How the first layers treat the input.

    input_size: the input resolution the stem is designed for (its receptive field in the paper).
    first_stride: stride of Conv2d_1a_3x3.
    first_pool: whether the 3x3/2 max-pool (``maxpool1``) follows Conv2d_2b_3x3.
    """

    input_size: int
    first_stride: int
    first_pool: bool


STEMS: dict[int, StemSpec] = {
    299: StemSpec(299, first_stride=2, first_pool=True),
    151: StemSpec(151, first_stride=1, first_pool=True),
    79: StemSpec(79, first_stride=1, first_pool=False),
}
StemSize = Literal[tuple(sorted(STEMS))]  # type: ignore[valid-type]  # the config's model.stem: one of STEMS


def get_stem(stem: int) -> StemSpec:
    """Look a stem up by its input size; an unknown one is an error that lists the valid ones."""
    try:
        return STEMS[int(stem)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"unknown stem {stem!r}: valid stems are {sorted(STEMS)}") from None


def _conv(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling window; 0 when the window does not fit."""
    if size + 2 * padding < kernel:
        return 0
    return (size + 2 * padding - kernel) // stride + 1


def grid_sizes(spec: StemSpec, size: int) -> dict[str, int]:
    """Spatial side of the feature map after each stage, by arithmetic alone (no tensor is built).

    Mirrors ``LowResInception.forward``: VALID 3x3 convolutions and 3x3/2 poolings as in the paper's
    Table 1 and torchvision. A value of 0 means the input is too small for that stage.
    """
    g = {"input": size}
    x = _conv(size, 3, spec.first_stride)          # Conv2d_1a_3x3
    x = _conv(x, 3)                                 # Conv2d_2a_3x3
    g["Conv2d_2b_3x3"] = x = _conv(x, 3, 1, 1)     # Conv2d_2b_3x3 (padding 1)
    if spec.first_pool:
        x = _conv(x, 3, 2)                          # maxpool1
    x = _conv(x, 1)                                 # Conv2d_3b_1x1
    g["Conv2d_4a_3x3"] = x = _conv(x, 3)           # Conv2d_4a_3x3
    g["Mixed_5b_in"] = g["Mixed_5d"] = x = _conv(x, 3, 2)  # maxpool2; Mixed_5b..5d keep the grid
    g["Mixed_6e"] = x = _conv(x, 3, 2)              # Mixed_6a reduces; 6b..6e keep it
    g["Mixed_7c"] = _conv(x, 3, 2)                  # Mixed_7a reduces; 7b, 7c keep it
    # Auxiliary head on Mixed_6e: 5x5/3 average pool, then an unpadded 5x5 convolution.
    g["aux"] = _conv(_conv(g["Mixed_6e"], 5, 3), 5)
    return g


def min_input_size(spec: StemSpec, *, with_aux: bool = False) -> int:
    """Smallest square input the network accepts (with the auxiliary head when ``with_aux``)."""
    key = "aux" if with_aux else "Mixed_7c"
    size = 1
    while grid_sizes(spec, size)[key] < 1:
        size += 1
    return size
