"""Config files: presets by name, YAML reading with ``base:`` chains, ``--set`` overrides, the resolved YAML out.

The dataclasses and their checks are :mod:`lowres.config`; this module is how a config gets from files and flags
to a :class:`~lowres.config.Config` and back to a file. :mod:`lowres.config` re-exports everything public here,
so callers import both halves from one place; the classes are imported where they are used (they import this
module's names at the end of theirs).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from ._atomic import atomic_write_bytes
from .config_checks import ConfigError, missing_keys

if TYPE_CHECKING:
    from .config import Config

BASE_KEY = "base"  # a YAML config's parent: a preset name or a path relative to the file

__all__ = ["parse_override", "apply_overrides", "list_presets", "preset_path", "default_train_config", "describe",
           "read_yaml", "resolve_base", "load_config", "save_config", "BENCH_PREFIX", "BASE_KEY"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.01'`` -> (['optim', 'lr'], 0.01); the value is parsed as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value, e.g. optim.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{text}': empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Fold ``key=value`` overrides into a nested dict (unknown keys are caught by ``Config.from_dict``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set '{text}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def _presets_dir() -> Path:
    """Where the YAML presets live: the installed ``configs`` package, else the source tree's configs/."""
    try:
        import configs  # the repository's configs/ package (see configs/__init__.py)

        return Path(configs.__file__).parent
    except ImportError:
        return Path(__file__).resolve().parent.parent / "configs"


BENCH_PREFIX = "bench_"  # configs/bench_NAME.yaml are `lowres bench --preset NAME` presets, not training configs


def list_presets(kind: Literal["train", "bench", "all"] = "train") -> list[str]:
    """Names of the YAML presets: training ones (``smoke``, ``cpu``, ``paper``, ``second_stage``) by default,
    ``kind="bench"`` the bench presets (``bench_smoke`` ...), ``"all"`` both."""
    names = sorted(p.stem for p in _presets_dir().glob("*.yaml"))
    if kind == "all":
        return names
    return [n for n in names if n.startswith(BENCH_PREFIX) == (kind == "bench")]


def preset_path(name_or_path: str | Path) -> Path:
    """A YAML file path, or a preset name resolved in configs/ (``'smoke'`` -> configs/smoke.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = _presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a preset (presets: {', '.join(list_presets())})")


def _refuse_bench_preset(raw: Any, source: str) -> None:
    """A bench preset (``bench:`` + ``config:`` sections) given to ``train``: say which command takes it."""
    if isinstance(raw, dict) and "bench" in raw:
        name = Path(source).stem
        hint = f"lowres bench --preset {name[len(BENCH_PREFIX):]}" if name.startswith(BENCH_PREFIX) else "lowres bench"
        raise ConfigError(f"{source} is a bench preset (it has a 'bench:' section): run it with `{hint}`; "
                          f"training presets: {', '.join(list_presets())}")


def default_train_config(config_file: str | None, *, data: str | None, out_dir: str | None, resume: bool
                         ) -> tuple[str | None, str | None]:
    """``(config, note)`` when no --config is given: the run's own config.yaml on --resume; the paper's recipe
    with --data (a real run, hours: the time per epoch is printed after the first steps); the smoke preset
    without data, so the first command a user types finishes in seconds and says what it did."""
    if config_file is not None:
        return config_file, None
    saved = Path(out_dir) / "config.yaml" if out_dir else None
    if resume and saved is not None and saved.is_file():
        return str(saved), None
    if data is None:
        return "smoke", ("note: no --config and no --data: running the smoke preset (configs/smoke.yaml: {summary}) "
                         "on the generated synthetic set, a check that everything works; for a real run pass "
                         "--data DIR (the paper's recipe) or --config NAME")
    return "paper", ("note: no --config: the paper's recipe (configs/paper.yaml: {summary}); the time per epoch is "
                     "estimated after the first steps. --config cpu is the 2-core-CPU recipe")


def describe(cfg: Config) -> str:
    """``"stem 79, width 0.125, 2 epochs of at most 4 steps, batch 8, rmsprop_tf"``: a run's size in a line."""
    t = cfg.train
    steps = f" of at most {t.max_steps_per_epoch} steps" if t.max_steps_per_epoch else ""
    return (f"stem {cfg.model.stem}, width {cfg.model.width:g}, {t.epochs} epochs{steps}, batch {t.batch_size}, "
            f"{cfg.optim.name}")


def read_yaml(path: Path, *, complete: bool = False) -> dict[str, Any]:
    """A config file's mapping; unreadable, malformed or non-UTF-8 files (and, with ``complete``, files that
    lack any key of a resolved config) are a :class:`ConfigError` naming the file and the place."""
    from .config import Config

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): is it a config file?") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"{path}: malformed YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    missing = missing_keys(raw, Config) if complete else []
    if missing:
        raise ConfigError(f"{path} is incomplete ({len(missing)} keys missing, e.g. {', '.join(missing[:3])}): a "
                          "resolved config has every key, so it was truncated or edited; restore it, or pass --config")
    return raw or {}


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key, anything else (None included) replaces."""
    out = dict(base)
    for name, value in update.items():
        both = isinstance(value, dict) and isinstance(out.get(name), dict)
        out[name] = _deep_merge(out[name], value) if both else value
    return out


def _base_path(name: Any, referrer: Path) -> Path:
    """The file a ``base:`` names: a YAML path relative to ``referrer``, else a preset of configs/."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{referrer}: 'base' must be a preset name or a YAML path, got {name!r}")
    for path in (referrer.parent / name, _presets_dir() / f"{name}.yaml"):
        if path.is_file():
            return path
    beside = referrer.parent / name
    raise ConfigError(f"{referrer}: base '{name}' is neither a file ({beside}) nor a preset "
                      f"(presets: {', '.join(list_presets())})")


def resolve_base(raw: dict[str, Any], path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``raw`` (a config mapping read from ``path``) merged over its ``base:`` chain; without one, ``raw``.

    A base that does not exist or that leads back to a file of the chain is a :class:`ConfigError` naming the
    file; a base's own mistakes (unknown keys, wrong types) are reported against the base's file."""
    from .config import Config

    chain = (*_chain, path.resolve())
    if BASE_KEY not in raw:
        return raw
    base = _base_path(raw[BASE_KEY], path)
    if base.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base.resolve()))
        raise ConfigError(f"{path}: 'base' makes a cycle ({cycle}): a preset cannot inherit from itself")
    base_raw = resolve_base(read_yaml(base), base, chain)
    _refuse_bench_preset(base_raw, str(base))
    Config.from_dict(base_raw, source=str(base))  # a mistake in the base is reported against the base
    return _deep_merge(base_raw, {k: v for k, v in raw.items() if k != BASE_KEY})


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                stem: int | None = None, data: str | None = None, complete: bool = False) -> Config:
    """Resolve defaults < YAML (file or preset name, over its ``base:`` chain) < ``--set`` overrides <
    ``stem``/``data`` flags.

    ``complete=True`` requires the file to be a full resolved config (a run folder's config.yaml on resume)."""
    from .config import Config

    raw: dict[str, Any] = {}
    source = "defaults"
    if config is not None:
        path = preset_path(config)
        source = str(path)
        raw = read_yaml(path, complete=complete)
        _refuse_bench_preset(raw, source)
        raw = resolve_base(raw, path)
        Config.from_dict(raw, source=source)  # report YAML mistakes against the file, not the flags
    raw = apply_overrides(raw, list(overrides))
    flags = bool(overrides)
    if stem is not None:
        raw.setdefault("model", {})["stem"] = int(stem)
        flags = True
    if data is not None:
        raw.setdefault("data", {})["path"] = str(data)
        flags = True
    return Config.from_dict(raw, source=f"{source} + flags" if flags else source)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (the run folder's config.yaml), atomically (no ``base:``: every key)."""
    return atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode("utf-8"))
