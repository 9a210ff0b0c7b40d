"""LowResInception: one Inception-v3 trunk behind any of the paper's three stems (section 9, Table 2)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .blocks import BasicConv2d, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE, make_depth
from .stems import StemSpec, get_stem, grid_sizes, min_input_size
from ..errors import InputError

# The trunk's stages in forward order; their names are torchvision's, so state dicts load unchanged.
_STAGE_5_6 = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")
_STAGE_7 = ("Mixed_7a", "Mixed_7b", "Mixed_7c")


class LowResInception(nn.Module):
    """Inception-v3 (paper Table 1) whose first layers follow a ``StemSpec``.

    Only ``Conv2d_1a_3x3``'s stride and the presence of ``maxpool1`` depend on the stem; both change no
    parameter shape, so one state dict fits all three stems. ``forward`` returns ``(logits, aux_logits)``
    in training mode with the auxiliary head, and plain logits otherwise (never a namedtuple in eval).
    """

    def __init__(
        self,
        stem: int,
        num_classes: int = 1000,
        *,
        width: float = 1.0,
        min_depth: int = 16,
        aux_logits: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        spec = get_stem(stem)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        d = make_depth(width, min_depth)
        self.spec: StemSpec = spec
        self.stem, self.width, self.min_depth = spec.input_size, float(width), int(min_depth)
        self.num_classes = num_classes
        self.Conv2d_1a_3x3 = BasicConv2d(3, d(32), kernel_size=3, stride=spec.first_stride)
        self.Conv2d_2a_3x3 = BasicConv2d(d(32), d(32), kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(d(32), d(64), kernel_size=3, padding=1)
        # Parameter-free, so present or not it changes no state-dict key (timm calls it Pool1).
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2) if spec.first_pool else nn.Identity()
        self.Conv2d_3b_1x1 = BasicConv2d(d(64), d(80), kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(d(80), d(192), kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(d(192), pool_features=32, depth=d)
        self.Mixed_5c = InceptionA(self.Mixed_5b.out_channels, pool_features=64, depth=d)
        self.Mixed_5d = InceptionA(self.Mixed_5c.out_channels, pool_features=64, depth=d)
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_channels, depth=d)
        self.Mixed_6b = InceptionC(self.Mixed_6a.out_channels, channels_7x7=128, depth=d)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out_channels, channels_7x7=160, depth=d)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out_channels, channels_7x7=160, depth=d)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out_channels, channels_7x7=192, depth=d)
        self.AuxLogits = InceptionAux(self.Mixed_6e.out_channels, num_classes, d) if aux_logits else None
        self.Mixed_7a = InceptionD(self.Mixed_6e.out_channels, depth=d)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_channels, depth=d)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_channels, depth=d)
        self.num_features = self.Mixed_7c.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.feature_info = self._feature_info()
        # The smallest inputs, found once here: forward compares two ints instead of searching over sizes.
        self._min_size = {aux: min_input_size(spec, with_aux=aux) for aux in (False, True)}
        self._init_weights()

    def _init_weights(self) -> None:
        """TF-slim's initialisation (truncated normal, stddev 0.1 unless a layer sets its own)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = float(getattr(m, "stddev", 0.1))
                nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _feature_info(self) -> list[dict[str, Any]]:
        """timm-style description of the feature maps: channels, nominal reduction and module name."""
        first = self.spec.first_stride
        pool1 = 2 if self.spec.first_pool else 1
        stages = [
            ("Conv2d_2b_3x3", self.Conv2d_2b_3x3.out_channels, first),
            ("Conv2d_4a_3x3", self.Conv2d_4a_3x3.out_channels, first * pool1),
            ("Mixed_5d", self.Mixed_5d.out_channels, first * pool1 * 2),
            ("Mixed_6e", self.Mixed_6e.out_channels, first * pool1 * 4),
            ("Mixed_7c", self.Mixed_7c.out_channels, first * pool1 * 8),
        ]
        return [dict(module=name, num_chs=chs, reduction=red) for name, chs, red in stages]

    def _check_input(self, x: Tensor) -> None:
        """Fail early, naming the stem and the smallest size that works, instead of deep inside a conv.

        Shape arithmetic only, against sizes computed once in ``__init__``: nothing is read from the device,
        and under ``torch.compile`` the shapes are known while tracing, so the check is resolved then and
        leaves no operation (and no graph break) in the compiled graph.
        """
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"stem {self.stem} expects a batch of RGB images N x 3 x H x W, got shape {tuple(x.shape)}")
        with_aux = self.training and self.AuxLogits is not None
        need = self._min_size[with_aux]
        if x.shape[2] < need or x.shape[3] < need:
            mode = "training with the auxiliary head" if with_aux else "inference"
            raise InputError(
                f"input {x.shape[2]}x{x.shape[3]} is too small for stem {self.stem}: {mode} needs at least "
                f"{need}x{need} (the stem is designed for {self.stem}x{self.stem})"
            )

    def forward_stem(self, x: Tensor) -> Tensor:
        """The layers before Mixed_5b; the stem's stride and pooling act here."""
        # N x 3 x S x S                (S = 299 | 151 | 79)
        x = self.Conv2d_1a_3x3(x)      # N x 32 x 149|149|77
        x = self.Conv2d_2a_3x3(x)      # N x 32 x 147|147|75
        x = self.Conv2d_2b_3x3(x)      # N x 64 x 147|147|75
        x = self.maxpool1(x)           # N x 64 x 73|73|75   (79 stem: no pool)
        x = self.Conv2d_3b_1x1(x)      # N x 80 x 73|73|75
        x = self.Conv2d_4a_3x3(x)      # N x 192 x 71|71|73
        return self.maxpool2(x)        # N x 192 x 35|35|36

    def _trunk(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features after Mixed_7c and, in training with the aux head, the auxiliary logits."""
        self._check_input(x)
        x = self.forward_stem(x)
        for name in _STAGE_5_6:        # N x 288 x 35|35|36, then N x 768 x 17 x 17
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if (self.training and self.AuxLogits is not None) else None
        for name in _STAGE_7:          # N x 1280 x 8 x 8, then N x 2048 x 8 x 8
            x = getattr(self, name)(x)
        return x, aux

    def forward_features(self, x: Tensor) -> Tensor:
        """Feature map after Mixed_7c (N x 2048w x 8 x 8 at the design sizes)."""
        return self._trunk(x)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, dropout, then the classifier (skipped with ``pre_logits``)."""
        x = torch.flatten(self.avgpool(x), 1)  # N x 2048w
        if pre_logits:
            return x
        return self.fc(self.dropout(x))        # N x num_classes

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        features, aux = self._trunk(x)
        logits = self.forward_head(features)
        if aux is not None:
            return logits, aux
        return logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (and the auxiliary one) for a new label set, freshly initialised."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.1, a=-0.2, b=0.2)
        nn.init.zeros_(self.fc.bias)
        if self.AuxLogits is not None:
            aux = self.AuxLogits
            aux.fc = nn.Linear(aux.fc.in_features, num_classes)
            nn.init.trunc_normal_(aux.fc.weight, std=0.001, a=-0.002, b=0.002)
            nn.init.zeros_(aux.fc.bias)
            aux.fc_bn = nn.BatchNorm1d(num_classes, eps=0.001)

    def grid_sizes(self, size: int | None = None) -> dict[str, int]:
        """Feature-map sides for an input of ``size`` (default: the stem's design size)."""
        return grid_sizes(self.spec, size or self.stem)


def build_model(
    stem: int,
    num_classes: int = 1000,
    *,
    width: float = 1.0,
    min_depth: int = 16,
    aux_logits: bool = True,
    dropout: float = 0.5,
) -> LowResInception:
    """Build the paper's Inception-v3 with the stem for ``stem`` (79, 151 or 299) input pixels.

    ``width`` scales every convolution's channels as TF-slim's ``depth_multiplier`` does, never below
    ``min_depth``; width 1.0 is the paper's network. The auxiliary head is the paper's "BN-auxiliary".
    """
    return LowResInception(
        stem, num_classes, width=width, min_depth=min_depth, aux_logits=aux_logits, dropout=dropout
    )
