"""``lowres cache list|clean``: what the on-disk cache holds, and removing what has not been used for a while.

The cache root is ``data.cache_dir`` or ``~/.cache/lowres`` (:func:`lowres.training.data.default_cache_root`).
It holds ``crops/crops_<size>px_<key>/`` (one crop cache per set of records, size and geometry; a changed input
makes a new one and leaves the old one unused), ``images/decoded_<n>_<key>/`` (ImageNet-layout images decoded
once), ``synthetic-seed<k>/`` (the generated synthetic set) and, after a crash, ``.crops_*.build`` /
``.decoded_*.tmp`` folders of an unfinished build (``.crops_*.tmp`` from older versions). Nothing else is ever written there, and
nothing outside the entries listed here is ever removed. "Last used" is the newest modification time inside an
entry: opening a crop cache touches its index.json, so a cache in use is never "old".
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ["CacheEntry", "cache_entries", "clean_cache", "verify_cache", "format_entries", "format_bytes", "cache_cli"]

DAY = 86400.0


@dataclass
class CacheEntry:
    path: Path
    kind: str  # "crops" | "decoded" | "synthetic" | "unfinished"
    bytes: int
    last_used: float  # seconds since the epoch

    def age_days(self, now: float | None = None) -> float:
        return ((now or time.time()) - self.last_used) / DAY


def _size_and_mtime(folder: Path) -> tuple[int, float]:
    total, newest = 0, folder.stat().st_mtime
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:  # removed while we looked
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def cache_entries(root: str | os.PathLike) -> list[CacheEntry]:
    """Every entry under ``root`` (oldest first); [] when the folder does not exist."""
    root = Path(root)
    found: list[tuple[Path, str]] = []
    if root.is_dir():
        found += [(p, "synthetic") for p in root.glob("synthetic-seed*") if p.is_dir()]
        for folder, prefix, kind in ((root / "crops", "crops_", "crops"), (root / "images", "decoded_", "decoded")):
            if folder.is_dir():
                found += [(p, kind) for p in folder.glob(f"{prefix}*") if p.is_dir()]
                found += [(p, "unfinished") for suffix in (".tmp", ".build")
                          for p in folder.glob(f".{prefix}*{suffix}") if p.is_dir()]
    entries = [CacheEntry(path, kind, *_size_and_mtime(path)) for path, kind in found]
    return sorted(entries, key=lambda e: e.last_used)


def clean_cache(root: str | os.PathLike, *, older_than_days: float | None = None, dry_run: bool = False
                ) -> list[CacheEntry]:
    """Remove the entries not used for ``older_than_days`` (all of them with None); returns what was (or, with
    ``dry_run``, would be) removed. An entry is renamed aside first, then deleted, so a half-deleted crop cache
    can never be opened as a valid one."""
    now = time.time()
    limit = older_than_days if older_than_days is not None else -1.0
    # an unfinished build younger than a day may be one in progress in another process: never pull it away
    chosen = [e for e in cache_entries(root)
              if e.age_days(now) > (max(limit, 1.0) if e.kind == "unfinished" else limit)]
    if dry_run:
        return chosen
    for e in chosen:
        doomed = e.path.with_name(f".deleting-{e.path.name}")
        try:
            os.replace(e.path, doomed)
        except OSError:
            continue  # gone already, or not ours to move
        shutil.rmtree(doomed, ignore_errors=True)
    return chosen


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def describe_entry(entry: CacheEntry) -> str:
    """What a crop cache was cut from: its images folder (the data set and split, e.g. ``coco-mini/images/val``)
    and crop size; ``?`` for caches written before they recorded it; empty for other kinds."""
    if entry.kind != "crops":
        return ""
    from detection_bridge.cache import SOURCE_NAME
    from detection_bridge.errors import BridgeError
    from detection_bridge.fileio import read_json

    try:
        source = read_json(entry.path / SOURCE_NAME, "crop cache source")
    except (OSError, BridgeError):  # caches from before source.json: listed all the same
        return "?"
    if not isinstance(source, dict):
        return "?"
    images = Path(source["images"]).parts[-3:] if source.get("images") else ()
    return f"{'/'.join(images) or '?'} ({source.get('crops', '?')} crops)"


def format_entries(entries: list[CacheEntry], root: str | os.PathLike) -> str:
    """A table: kind, size, days since last use, path relative to the root, what it holds; and the total."""
    now = time.time()
    lines = [f"{'kind':<10} {'size':>9} {'unused':>10}  path (under {root})  [data set / split]"]
    for e in entries:
        about = describe_entry(e)
        lines.append(f"{e.kind:<10} {format_bytes(e.bytes):>9} {e.age_days(now):>7.1f} d  {e.path.relative_to(root)}"
                     + (f"  [{about}]" if about else ""))
    lines.append(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
                 f"{format_bytes(sum(e.bytes for e in entries))} in all")
    return "\n".join(lines)


# -- `lowres cache` (registered on the main group by lowres.cli) ------------------------------------------
@click.group("cache")
def cache_cli() -> None:
    """The on-disk cache (crop caches and the synthetic set): ~/.cache/lowres, or data.cache_dir."""


def _cache_root(cache_dir: str | None) -> Path:
    from .config import Config
    from .training.data import default_cache_root

    cfg = Config()
    cfg.data.cache_dir = cache_dir
    return default_cache_root(cfg)


@cache_cli.command("list")
@click.option("--cache-dir", default=None, help="Cache root (default: ~/.cache/lowres, as data.cache_dir).")
def cache_list(cache_dir: str | None) -> None:
    """Each entry with its size and the days since it was last used."""
    root = _cache_root(cache_dir)
    click.echo(format_entries(cache_entries(root), root))


@cache_cli.command("clean")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Only entries unused for more than DAYS days (default: every entry).")
@click.option("--cache-dir", default=None, help="Cache root (default: ~/.cache/lowres, as data.cache_dir).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
def cache_clean(older_than: float | None, cache_dir: str | None, dry_run: bool) -> None:
    """Remove crop caches and synthetic sets (they are rebuilt on demand, at the cost of one decode)."""
    root = _cache_root(cache_dir)
    removed = clean_cache(root, older_than_days=older_than, dry_run=dry_run)
    for e in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {e.kind} {e.path} ({format_bytes(e.bytes)}, "
                   f"unused {e.age_days():.1f} d)")
    total = format_bytes(sum(e.bytes for e in removed))
    click.echo(f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, {total} "
               f"{'would be freed' if dry_run else 'freed'} under {root}")


def verify_cache(root: str | os.PathLike) -> list[tuple[CacheEntry, str, str | None]]:
    """Every crop cache under ``root`` with its state: ``ok``, ``old`` (an older cache format: never opened
    now, so not damaged, just unused) or ``damaged`` with the reason (each shard's size and CRC-32, whatever
    the cache's size: opening checks CRCs only up to 2 GiB)."""
    from detection_bridge.cache import CACHE_VERSION, INDEX_NAME, CropCache
    from detection_bridge.errors import BridgeError
    from detection_bridge.fileio import read_json

    out: list[tuple[CacheEntry, str, str | None]] = []
    for e in (e for e in cache_entries(root) if e.kind == "crops"):
        try:
            version = read_json(e.path / INDEX_NAME, "crop cache index").get("version")
            if version != CACHE_VERSION:
                out.append((e, "old", f"cache format {version} (this version writes {CACHE_VERSION})"))
                continue
            CropCache(e.path, verify=True)
            out.append((e, "ok", None))
        except (BridgeError, AttributeError) as exc:  # AttributeError: an index that is not a JSON object
            out.append((e, "damaged", str(exc)))
    return out


@cache_cli.command("verify")
@click.option("--cache-dir", default=None, help="Cache root (default: ~/.cache/lowres, as data.cache_dir).")
def cache_verify(cache_dir: str | None) -> None:
    """Check every crop cache's shards (sizes and CRC-32); exit 1 if one is damaged (remove it with
    `lowres cache clean`, or just train: a damaged cache is never used, and is rebuilt). Caches of an older
    format are listed as such: unused, never damaged."""
    results = verify_cache(_cache_root(cache_dir))
    label = {"ok": "ok", "old": "old", "damaged": "DAMAGED"}
    for e, state, detail in results:
        click.echo(f"{label[state]}  {e.path}" + (f": {detail}" if detail else "")
                   + ("; unused now, `lowres cache clean --older-than DAYS` removes it" if state == "old" else ""))
    bad = sum(state == "damaged" for _, state, _ in results)
    old = sum(state == "old" for _, state, _ in results)
    click.echo(f"{len(results)} crop cache(s) checked, {bad} damaged, {old} of an older format")
    if bad:
        raise SystemExit(1)
