"""The benchmark's rows as data, and the bench presets (``configs/bench_{smoke,cpu,paper}.yaml``).

Five variants answer the paper's Table 2 question on object crops and separate its two causes:

======================  ======  ===========  ==============  ============================================
variant                 stem    crop (px)    model input     what it measures
======================  ======  ===========  ==============  ============================================
``299``                 299     299          299             the paper's high-resolution network
``151``                 151     151          151             Table 2's middle row
``79``                  79      79           79              Table 2's low-resolution network, full cost
``naive-79``            299     79           79              the 299 network fed 79 px crops: the paper's
                                                             "naively reduced" network (~16x cheaper)
``upsample-79``         299     79           299 (bilinear)  the information of a 79 px crop at the cost
                                                             of the 299 network: stem design vs resolution
======================  ======  ===========  ==============  ============================================

Every variant trains from the same shared training config (same data, recipe, epochs and seeds); a
variant changes only ``model.stem``, ``crop.size`` and ``crop.upsample_to`` (and turns the auxiliary head
off where the input is too small for it: naive-79).

A bench preset is a YAML file with two sections: ``bench`` (variants, seeds, throughput settings) and
``config`` (a training config, the same keys as ``configs/cpu.yaml``, shared by every variant; its ``base:``
names the training preset it starts from, e.g. ``base: cpu``). It is not a ``lowres train`` config
(``lowres train --config bench_cpu`` is refused, naming ``lowres bench``).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import Config, ConfigError, apply_overrides, parse_override, preset_path, read_yaml, resolve_base
from ..models import STEMS, min_input_size
from ..runtime import model_input_size

__all__ = ["Variant", "VARIANTS", "PAPER_TABLE2", "ThroughputSpec", "BenchSpec", "load_bench_preset",
           "bench_preset_path", "variant_config"]

# Szegedy et al. 2016, Table 2: top-1 (%) on ILSVRC-12 validation, single frame, at constant compute.
PAPER_TABLE2: dict[int, float] = {299: 76.6, 151: 76.4, 79: 75.2}


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: which stem network sees which crops at which size."""

    name: str
    stem: int  # stem network (lowres.STEMS key)
    crop: int  # crop side cut from the original pixels (antialiased resample, detection_bridge)
    upsample_to: Optional[int] = None  # bilinear resize of the crop before the model; None = fed as cut
    note: str = ""  # one line for the report

    @property
    def input_size(self) -> int:
        """Side of the images the model sees (:func:`lowres.runtime.model_input_size`, the rule training uses)."""
        return model_input_size(self.stem, self.crop, self.upsample_to)

    @property
    def paper_top1(self) -> Optional[float]:
        """Table 2's top-1 for the stem variants fed their own size; None for our extra rows."""
        return PAPER_TABLE2.get(self.stem) if self.crop == self.stem and not self.upsample_to else None


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("299", 299, 299, note="the paper's 299 network on 299 px crops"),
    Variant("151", 151, 151, note="151 stem (stride-1 first conv, pool) on 151 px crops"),
    Variant("79", 79, 79, note="79 stem (stride-1 first conv, no pool) on 79 px crops: same cost as 299"),
    Variant("naive-79", 299, 79, note="299 network on native 79 px crops: the naive, ~16x cheaper network"),
    Variant("upsample-79", 299, 79, upsample_to=299,
            note="79 px crops upsampled to 299 for the 299 network: low-res information at full cost"),
)}


@dataclass
class ThroughputSpec:
    """Inference images/s: same batch for every variant, warm-up first, rounds interleaved across variants."""

    batch: int = 32  # images per forward pass
    warmup: int = 2  # untimed forward passes per variant, once before the rounds and again in each round
    iters: int = 5  # timed forward passes per variant per round
    rounds: int = 3  # rounds over all variants; the median is reported with the range of the rounds


@dataclass
class BenchSpec:
    """A resolved bench preset."""

    name: str  # preset name or file
    variants: list[str]  # VARIANTS keys, in report order
    seeds: int  # training seeds per variant: train.seed, train.seed + 1, ...
    config: dict[str, Any]  # the shared training config (resolved, plain dict)
    throughput: ThroughputSpec = field(default_factory=ThroughputSpec)
    source: str = ""  # file the preset came from
    variant_seeds: dict[str, int] = field(default_factory=dict)  # variants that train another number of seeds

    def seed_values(self, variant: str | None = None) -> list[int]:
        """The seeds ``variant`` trains (``bench.variant_seeds`` or ``bench.seeds`` of them), the first ones
        of ``train.seed, train.seed + 1, ...``: a variant with fewer seeds shares its seeds with the others."""
        base = int(self.config["train"]["seed"])
        return [base + i for i in range(self.variant_seeds.get(variant or "", self.seeds))]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "variants": list(self.variants), "seeds": self.seeds,
                "variant_seeds": dict(self.variant_seeds), "seed_values": self.seed_values(),
                "throughput": asdict(self.throughput), "config": self.config, "source": self.source}


def bench_preset_path(name_or_path: str | Path) -> Path:
    """``'cpu'`` -> configs/bench_cpu.yaml; a YAML file path is returned as is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    try:
        return preset_path(f"bench_{name_or_path}")
    except ConfigError:
        raise ConfigError(f"bench preset '{name_or_path}' is neither a file nor configs/bench_{name_or_path}.yaml "
                          "(presets: smoke, cpu, imagenette, paper)") from None


def _bench_section(raw: Any, source: str) -> dict[str, Any]:
    """Check the ``bench`` section's keys and types; return it merged over the defaults."""
    known = {"variants", "seeds", "variant_seeds", "throughput"}
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'bench' must be a mapping")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key 'bench.{unknown[0]}' (known: {', '.join(sorted(known))})")
    variants = [str(v) for v in raw.get("variants", list(VARIANTS))]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants or len(set(variants)) != len(variants):
        raise ConfigError(f"{source}: 'bench.variants' must list distinct names from {', '.join(VARIANTS)}; "
                          f"got {variants}")
    seeds = raw.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ConfigError(f"{source}: 'bench.seeds' expects an integer >= 1, got {seeds!r}")
    variant_seeds = raw.get("variant_seeds") or {}
    if isinstance(variant_seeds, dict):  # YAML reads {79: 1} with a number for the name
        variant_seeds = {str(name): n for name, n in variant_seeds.items()}
    if not isinstance(variant_seeds, dict) or any(
            name not in VARIANTS or not isinstance(n, int) or isinstance(n, bool) or n < 1
            for name, n in variant_seeds.items()):
        raise ConfigError(f"{source}: 'bench.variant_seeds' maps variant names ({', '.join(VARIANTS)}) to a number "
                          f"of seeds >= 1 (e.g. {{naive-79: 1}}); got {variant_seeds!r}")
    # a preset's entry for a variant that --variants left out is not a mistake: it has nothing to apply to
    variant_seeds = {name: n for name, n in variant_seeds.items() if name in variants}
    tp_raw = raw.get("throughput") or {}
    tp_known = set(asdict(ThroughputSpec()))
    if not isinstance(tp_raw, dict) or set(tp_raw) - tp_known:
        raise ConfigError(f"{source}: 'bench.throughput' takes {', '.join(sorted(tp_known))}; got {tp_raw!r}")
    for key, value in tp_raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "warmup" else 1):
            raise ConfigError(f"{source}: 'bench.throughput.{key}' expects a positive integer, got {value!r}")
    return {"variants": variants, "seeds": seeds, "variant_seeds": variant_seeds,
            "throughput": ThroughputSpec(**tp_raw)}


def _split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``bench.*`` overrides go to the bench section, everything else to the shared training config."""
    bench, config = [], []
    for text in overrides:
        parts, _ = parse_override(text)
        if parts[0] == "bench":
            bench.append(text.split(".", 1)[1])
        else:
            config.append(text[len("config."):] if parts[0] == "config" else text)
    return bench, config


def load_bench_preset(name_or_path: str | Path = "smoke", overrides: list[str] | tuple[str, ...] = (), *,
                      seeds: int | None = None, variants: list[str] | None = None) -> BenchSpec:
    """Resolve a bench preset: YAML < ``--set`` overrides (``bench.seeds=2``, ``train.epochs=3``) < flags."""
    path = bench_preset_path(name_or_path)
    source = str(path)
    raw = read_yaml(path)
    if set(raw) - {"bench", "config"}:
        extra = sorted(set(raw) - {"bench", "config"})
        raise ConfigError(f"{source}: a bench preset has the sections 'bench' and 'config' only, got {extra}")
    bench_over, config_over = _split_overrides(overrides)
    bench_raw = apply_overrides(raw.get("bench") or {}, bench_over)
    if seeds is not None:
        bench_raw["seeds"] = int(seeds)
    if variants is not None:
        bench_raw["variants"] = list(variants)
    bench = _bench_section(bench_raw, source + (" + flags" if bench_over or seeds or variants else ""))
    config_raw = apply_overrides(resolve_base(raw.get("config") or {}, path), config_over)  # config.base: a preset
    cfg = Config.from_dict(config_raw, source=f"{source} config" + (" + flags" if config_over else ""))
    name = path.stem[len("bench_"):] if path.stem.startswith("bench_") else str(path)
    return BenchSpec(name=name, config=cfg.to_dict(), source=source, **bench)


def variant_config(shared: dict[str, Any], variant: Variant, *, seed: int, data: str | None = None) -> Config:
    """The shared training config with the variant's stem, crop and input sizes and the given seed.

    ``{variant}`` in ``model.weights`` becomes the variant's name, so each variant can start from its own
    network of another study (``runs/{variant}/seed0/last.pt``). The auxiliary head stays as configured unless the model input is smaller than the stem's aux head
    accepts (naive-79: the 299 stem's aux head needs a 299 input); then it is off for that variant.
    """
    raw = copy.deepcopy(shared)
    raw["model"]["stem"] = variant.stem
    raw["crop"]["size"] = None if variant.crop == variant.stem else variant.crop
    raw["crop"]["upsample_to"] = variant.upsample_to
    raw["train"]["seed"] = int(seed)
    if isinstance(raw["model"]["weights"], str):  # per-variant start weights, e.g. another bench's runs/{variant}/
        raw["model"]["weights"] = raw["model"]["weights"].replace("{variant}", variant.name)
    if data is not None:
        raw["data"]["path"] = str(data)
    if raw["model"]["aux_logits"] and variant.input_size < min_input_size(STEMS[variant.stem], with_aux=True):
        raw["model"]["aux_logits"] = False
    return Config.from_dict(raw, source=f"bench variant {variant.name}")
