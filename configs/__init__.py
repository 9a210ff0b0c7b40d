"""YAML presets for ``lowres train --config NAME`` (smoke, cpu, paper).

A package only so the presets can be found by name wherever the project is installed:
``lowres.config.preset_path('cpu')`` resolves to this folder's ``cpu.yaml``.
"""
from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent


def preset_files() -> dict[str, Path]:
    """Preset name -> YAML file."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}
