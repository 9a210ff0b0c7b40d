"""YAML presets for ``lowres train --config NAME`` (smoke, cpu, paper, second_stage) and ``lowres bench
--preset NAME`` (the ``bench_*`` files).

The paper's recipe is the defaults of ``lowres/config.py`` (paper.yaml only adds how a GPU run executes it);
the CPU recipe is cpu.yaml, which second_stage.yaml and the bench presets' ``config:`` start from with
``base: cpu``: each file lists only what it changes, with the reason. A package only so the presets can be
found by name wherever the project is installed: ``lowres.config.preset_path('cpu')`` resolves to this
folder's ``cpu.yaml``.
"""
from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent


def preset_files() -> dict[str, Path]:
    """Preset name -> YAML file."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}
