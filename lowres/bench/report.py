"""Aggregate the bench's runs into rows and contrasts, read them against the paper, write report.md/.json.

Numbers are fractions in report.json and percentages (or points) in report.md. Uncertainty:

- **top-1 95% CI** per variant: of the mean over seeds, from a two-level bootstrap (:func:`two_level_bootstrap`):
  each replicate resamples the validation crops and the seeds (training runs), so the interval covers both
  which images were drawn and how a training run turned out. The seeds' standard deviation and each seed's
  top-1 are reported beside it; ``ci_images`` is the interval over crops alone.
- **contrasts** (e.g. 79 - 299): the same bootstrap, *paired* over crops (both variants scored on the same
  drawn crops, which is sharper than comparing two intervals) and over each variant's seeds independently;
  whether the paper's difference lies inside the interval is reported per contrast.
With one seed both reduce to the bootstrap over crops, and a seed-to-seed change of a few points (larger than
the paper's gaps) goes unseen: that is why the Imagenette study runs three.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._atomic import atomic_write_text, json_line
from ..config import Config
from ..metrics import SIZE_BUCKETS
from .reading import floor, pct, pts, reading
from .stats import paired_difference, seed_summary
from .variants import PAPER_TABLE2, VARIANTS, BenchSpec

__all__ = ["build_report", "render_markdown", "write_report", "CONTRASTS"]

# (a, b, the paper's top-1 difference a - b in points, or None; what the contrast asks)
CONTRASTS: list[tuple[str, str, float | None, str]] = [
    ("79", "299", PAPER_TABLE2[79] - PAPER_TABLE2[299], "low-resolution network of full cost vs the 299 network"),
    ("151", "299", PAPER_TABLE2[151] - PAPER_TABLE2[299], "151 stem vs the 299 network"),
    ("79", "151", PAPER_TABLE2[79] - PAPER_TABLE2[151], "79 stem vs 151 stem"),
    ("naive-79", "79", None, "naive 299 network on 79 px crops vs the dedicated 79 stem (paper: 'much worse')"),
    ("upsample-79", "79", None, "same pixels: upsampled for the 299 network vs the dedicated 79 stem"),
    ("upsample-79", "299", None, "same network: 79 px information upsampled vs real 299 px crops"),
]


def _common_keys(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Validation crops present in every run (all of them unless a run's data differed)."""
    runs = [r for rs in results.values() for r in rs]
    common = set(runs[0]["predictions"]["keys"])
    for r in runs[1:]:
        common &= set(r["predictions"]["keys"])
    return [k for k in runs[0]["predictions"]["keys"] if k in common]


def _correct_matrix(runs: Sequence[dict[str, Any]], keys: list[str]) -> np.ndarray:
    rows = []
    for r in runs:
        p = r["predictions"]
        hit = dict(zip(p["keys"], (np.asarray(p["top1"]) == np.asarray(p["target"])).astype(np.float64)))
        rows.append([hit[k] for k in keys])
    return np.asarray(rows, dtype=np.float64).reshape(len(runs), len(keys))


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def bucket_names(report: dict[str, Any]) -> list[str]:
    """The buckets the rows are broken down by (COCO size buckets today; whatever ``size_buckets`` holds),
    in the order of the first row, keeping only those with crops."""
    rows = report["rows"]
    return [b for b, cell in rows[0]["size_buckets"].items() if cell.get("count")] if rows else []


def _buckets(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [*SIZE_BUCKETS, *(b for b in runs[0]["metrics"]["size_buckets"] if b not in SIZE_BUCKETS)]
    out = {}
    for b in names:
        cells = [r["metrics"]["size_buckets"].get(b, {}) for r in runs]
        out[b] = {"count": int(cells[0].get("count", 0)), "top1": _mean([c.get("top1") for c in cells])}
    return out


def _per_class(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Top-1 per class (mean over seeds) with counts: the breakdown for data without COCO size buckets."""
    out: dict[str, dict[str, Any]] = {}
    for cell in runs[0]["metrics"]["per_class"]:
        values = [next(c["top1"] for c in r["metrics"]["per_class"] if c["label"] == cell["label"]) for r in runs]
        out[cell["name"]] = {"count": int(cell["count"]), "top1": _mean(values)}
    return out


def has_size_buckets(report: dict[str, Any]) -> bool:
    """COCO crops carry size buckets; whole images (ImageNet layout) do not, and are broken down per class."""
    return any(cell["count"] for cell in report["rows"][0]["size_buckets"].values())


def _row(name: str, runs: list[dict[str, Any]], cost: dict[str, Any], correct: np.ndarray, cfg: Config
         ) -> dict[str, Any]:
    v = VARIANTS[name]
    e = cfg.eval
    top1 = seed_summary(correct, n_boot=e.bootstrap, ci=e.ci, seed=e.seed)
    return {
        "variant": name, "stem": v.stem, "crop": v.crop, "input": v.input_size, "upsample_to": v.upsample_to,
        "note": v.note, "aux_logits": cfg.model.aux_logits, "width": cfg.model.width,
        "paper_top1": None if v.paper_top1 is None else v.paper_top1 / 100.0,
        "seeds": [r["seed"] for r in runs], "count": int(correct.shape[1]),
        "top1": top1["mean"], "top1_ci": top1["ci"], "top1_ci_images": top1["ci_images"], "top1_sd": top1["sd"],
        "top1_per_seed": top1["per_seed"],
        "top5": _mean([r["metrics"]["top5"] for r in runs]),
        "balanced_accuracy": _mean([r["metrics"]["balanced_accuracy"] for r in runs]),
        "size_buckets": _buckets(runs), "per_class": _per_class(runs),
        "params": cost["params"], "gflops": cost["gflops"], "images_per_s": cost["images_per_s"],
        "images_per_s_spread": cost.get("spread") or [min(cost["rounds"]), max(cost["rounds"])],
        "images_per_s_rounds": cost["rounds"], "throughput_batch": cost["batch"],
        "train_seconds": _mean([r["train_seconds"] for r in runs]),
        "train_seconds_per_seed": [r["train_seconds"] for r in runs],
        "epochs": runs[0]["epochs"], "steps": runs[0]["steps"], "num_train": runs[0]["num_train"],
        "reused": [bool(r.get("reused")) for r in runs], "resumed": [bool(r.get("resumed")) for r in runs],
    }


def _contrasts(rows: dict[str, dict[str, Any]], matrices: dict[str, np.ndarray], cfg: Config) -> list[dict]:
    out = []
    for a, b, paper, question in CONTRASTS:
        if a not in rows or b not in rows:
            continue
        d = paired_difference(matrices[a], matrices[b], n_boot=cfg.eval.bootstrap, ci=cfg.eval.ci, seed=cfg.eval.seed)
        (alo, ahi), (blo, bhi) = rows[a]["top1_ci"], rows[b]["top1_ci"]
        paper_delta = None if paper is None else paper / 100.0
        out.append({"a": a, "b": b, "question": question, "delta": d["delta"], "ci": d["ci"],
                    "ci_images": d["ci_images"], "seeds": [len(matrices[a]), len(matrices[b])],
                    "paper_delta": paper_delta, "cis_overlap": bool(alo <= bhi and blo <= ahi),
                    "paper_inside": None if paper_delta is None else bool(d["ci"][0] <= paper_delta <= d["ci"][1])})
    return out


def build_report(spec: BenchSpec, results: dict[str, list[dict[str, Any]]], costs: dict[str, dict[str, Any]], *,
                 configs: dict[str, Config], data: str | None, command: str | None, environment: dict[str, Any],
                 wall_times: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything report.json holds: settings, rows, contrasts, the reading, resolved configs, environment."""
    keys = _common_keys(results)
    matrices = {name: _correct_matrix(runs, keys) for name, runs in results.items()}
    rows = {name: _row(name, runs, costs[name], matrices[name], configs[name]) for name, runs in results.items()}
    first = results[spec.variants[0]][0]
    shared = configs[spec.variants[0]]
    images = not any(r["metrics"]["size_buckets"] for rs in results.values() for r in rs)
    report = {
        "title": (f"Table 2 on {'whole images (ImageNet layout)' if images else 'object crops'}: top-1 at (almost) "
                  "constant compute, 79 vs 151 vs 299"),
        "preset": spec.to_dict(), "command": command or "python: lowres.bench.run_bench(...)",
        "data": {"path": data, "resolved": first["data_dir"], "synthetic": data is None and shared.data.path is None,
                 "train_split": shared.data.train_split, "val_split": shared.data.val_split,
                 "boxes": shared.data.boxes, "num_train": first["num_train"], "num_val": len(keys),
                 "num_classes": first["num_classes"]},
        "environment": environment, "bench_seconds": float(sum(w["seconds"] for w in wall_times)),
        "wall_times": wall_times,
        "paper_table2": {str(k): v / 100.0 for k, v in PAPER_TABLE2.items()},
        "rows": [rows[name] for name in spec.variants],
        "contrasts": _contrasts(rows, matrices, shared),
        "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
        "runs": {name: [{k: r[k] for k in ("seed", "run_dir", "metrics", "history", "train_seconds", "epochs",
                                           "steps", "weights", "curves") if k in r} for r in runs]
                 for name, runs in results.items()},
    }
    report["floor"] = floor(report)
    report["reading"] = reading(report)
    return report


# -- Markdown ------------------------------------------------------------------------------------------------
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _top1_cell(r: dict[str, Any]) -> str:
    lo, hi = r["top1_ci"]
    spread = f" ± {100 * r['top1_sd']:.1f}" if r["top1_sd"] is not None else ""
    return f"**{pct(r['top1'])}**{spread} [{pct(lo)}, {pct(hi)}]"


def _seeds_cell(r: dict[str, Any]) -> str:
    """Each seed's top-1, in seed order (the spread a reader should compare the paper's gaps with)."""
    return ", ".join(pct(v) for v in r["top1_per_seed"])


def _bucket_cell(r: dict[str, Any], bucket: str) -> str:
    cell = r["size_buckets"][bucket]
    return f"{pct(cell['top1'])} ({cell['count']})"


def _speed_cell(r: dict[str, Any]) -> str:
    lo, hi = r.get("images_per_s_spread") or [r["images_per_s"]] * 2
    return f"{r['images_per_s']:.0f} [{lo:.0f}–{hi:.0f}]"


def _table(report: dict[str, Any]) -> list[str]:
    buckets = bucket_names(report)
    head = ["variant", "network", "crop → input", "top-1 % ± seed sd [95% CI]", "per seed %", "paper top-1 %",
            "top-5 %", "balanced %",
            *(f"{b} % (n)" for b in buckets), "params", "GFLOPs", "images/s [range]", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        network = f"{r['stem']} stem" + ("" if r["aux_logits"] else ", no aux head")
        size = f"{r['crop']} → {r['input']}" if r["upsample_to"] else f"{r['crop']}"
        cells = [f"`{r['variant']}`", network, size, _top1_cell(r), _seeds_cell(r),
                 pct(r["paper_top1"]) if r["paper_top1"] else "—",
                 pct(r["top5"]), pct(r["balanced_accuracy"]), *(_bucket_cell(r, b) for b in buckets),
                 f"{r['params'] / 1e6:.2f} M", f"{r['gflops']:.3f}", _speed_cell(r),
                 _duration(r["train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _class_table(report: dict[str, Any]) -> list[str]:
    """Per-class top-1 (classes as rows, variants as columns), for data without COCO size buckets."""
    rows = report["rows"]
    lines = ["| class (val images) | " + " | ".join(f"`{r['variant']}`" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for name, cell in rows[0]["per_class"].items():
        lines.append(f"| {name} ({cell['count']}) | " + " | ".join(pct(r["per_class"][name]["top1"]) for r in rows)
                     + " |")
    return lines


def _contrast_table(report: dict[str, Any]) -> list[str]:
    lines = ["| contrast | seeds | Δ top-1 (points) | 95% CI (images and seeds) | 95% CI (images only) | "
             "paper Δ (Table 2) | paper Δ inside the CI |", "|---|---|---|---|---|---|---|"]
    for c in report["contrasts"]:
        (lo, hi), (ilo, ihi) = c["ci"], c.get("ci_images") or c["ci"]
        paper = pts(c["paper_delta"]) if c["paper_delta"] is not None else "—"
        inside = "—" if c.get("paper_inside") is None else "yes" if c["paper_inside"] else "no"
        seeds = " vs ".join(str(n) for n in c.get("seeds", []))
        lines.append(f"| `{c['a']}` − `{c['b']}` | {seeds} | {pts(c['delta'])} | [{pts(lo)}, {pts(hi)}] | "
                     f"[{pts(ilo)}, {pts(ihi)}] | {paper} | {inside} |")
    return lines


def display_path(path: str | None) -> str | None:
    """``path`` relative to the working directory when that is shorter (report.md is read beside the command
    that made it, so machine-specific absolute paths only where nothing shorter says the same)."""
    if not path:
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return rel if len(rel) < len(path) else path


def _caps(cfg: dict[str, Any]) -> str:
    """The limits a smoke or CPU preset puts on the paper's recipe: they change what a number means."""
    t, d = cfg["train"], cfg["data"]
    caps = [f"at most {t['max_steps_per_epoch']} steps per epoch" if t.get("max_steps_per_epoch") else None,
            f"the first {d['max_train']} training crops (data.max_train)" if d.get("max_train") else None,
            f"the first {d['max_val']} validation crops (data.max_val)" if d.get("max_val") else None]
    caps = [c for c in caps if c]
    return f"; capped: {', '.join(caps)}" if caps else "; no step or data caps"


def _wall_time(report: dict[str, Any]) -> str:
    times = report.get("wall_times") or [{"seconds": report["bench_seconds"], "trained": None}]
    if len(times) == 1:
        return f"whole bench {_duration(times[0]['seconds'])}"

    def one(w: dict[str, Any]) -> str:
        what = ("runs trained: unknown" if w["trained"] is None else "every run reused" if w["trained"] == 0
                else f"{w['trained']} run(s) trained")
        return f"{_duration(w['seconds'])} ({what}{', interrupted' if w.get('interrupted') else ''})"

    return (f"wall time {_duration(report['bench_seconds'])} over {len(times)} invocations on this folder: "
            + ", then ".join(one(w) for w in times))


def _fewer_seeds(preset: dict[str, Any]) -> str:
    other = preset.get("variant_seeds") or {}
    return (" (" + "; ".join(f"`{name}`: {n} seed{'s' if n > 1 else ''}" for name, n in other.items()) + ")"
            if other else "")


def _settings(report: dict[str, Any]) -> list[str]:
    p, d, env = report["preset"], report["data"], report["environment"]
    cfg = report["configs"][p["variants"][0]]
    o, s, t = cfg["optim"], cfg["schedule"], cfg["train"]
    data = "the generated synthetic set" if d["synthetic"] else f"`{display_path(d['path'])}`"
    dirty = " (working tree modified)" if env.get("dirty") else ""
    return [
        f"- **Preset** `{p['name']}` ({display_path(p['source'])}); **data** {data}: train on `{d['train_split']}` "
        f"({d['num_train']:,} {d['boxes']} crops), report on `{d['val_split']}` ({d['num_val']:,} crops), "
        f"{d['num_classes']} classes.",
        f"- **Network** width {cfg['model']['width']:g} (min depth {cfg['model']['min_depth']}), dropout "
        f"{cfg['model']['dropout']:g}, aux head weight {t['aux_weight']:g} where the input allows it.",
        f"- **Recipe** (the same for every variant) {o['name']} lr {o['lr']:g}, weight decay {o['weight_decay']:g}, "
        f"{s['name']} schedule (warm-up {s['warmup_epochs']:g} epochs), {t['epochs']} epochs of batch "
        f"{t['batch_size']}, label smoothing {t['label_smoothing']:g}, EMA {t['ema_decay'] if t['ema'] else 'off'}, "
        f"{t['precision']}{', channels_last' if cfg['model']['channels_last'] else ''}{_caps(cfg)}; "
        f"seeds {p['seed_values']}{_fewer_seeds(p)}.",
        f"- **Command** `{report['command']}`",
        f"- **Commit** `{env['commit']}`{dirty}; torch {env['torch']} on {env['device']} ({env['device_name']}, "
        f"{env['torch_threads']} threads); {_wall_time(report)}.",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: settings, our table beside Table 2, paired contrasts, the reading, plots, how to read it."""
    lines = [f"# {report['title']}", "", *_settings(report), "",
             "## Result", "", "Paper: Szegedy et al. 2016, Table 2 (ILSVRC-12 top-1 at almost constant compute: "
             "79x79 75.2%, 151x151 76.4%, 299x299 76.6%). Ours: the mean top-1 over seeds on the validation "
             "crops ± the standard deviation over seeds, with a 95% CI over both images and seeds, and each "
             "seed's top-1.", "", *_table(report), "",
             *([] if has_size_buckets(report) else ["## Top-1 per class", "", *_class_table(report), ""]),
             "## Differences between variants", "", *_contrast_table(report), "",
             "## Reading", "", *[f"- {s}" for s in report["reading"]], "",
             "## Plots", "", *[f"![{name}]({name})" for name in report.get("plots", [])], "",
             "## How to read this report", "",
             "- *top-1 [CI]*: share of validation crops whose first guess is right; the interval is a percentile "
             "bootstrap over crops (crops of one image are correlated, so it is somewhat optimistic).",
             "- *Δ and its CIs*: the difference of the two variants' seed-mean top-1 on the same crops. The first "
             "interval resamples the crops (the same for both: paired) and each variant's seeds (training runs), "
             "so it covers which images were drawn and how training turned out; with 3 seeds its seed part is "
             "somewhat narrow (resampling 3 values understates their spread by sqrt(2/3)). The second resamples "
             "crops only, which more seeds cannot shrink. An interval holding zero means no detectable difference.",
             "- *balanced*: mean per-class accuracy (COCO crops are dominated by a few classes, 'person' first).",
             "- *small / medium / large* (COCO crops): top-1 per COCO size bucket (object area < 32², < 96², larger) "
             "with counts; ImageNet-layout data has no size buckets and is broken down per class instead.",
             "- *GFLOPs*: one forward pass at the variant's model input (multiply-add = 2). *images/s*: inference "
             "on this machine, model forward only, same batch for all, the median of interleaved rounds after "
             "warm-up with the range of the rounds; where two ranges overlap the speeds cannot be told apart. "
             "*train time*: the epochs' wall time including each epoch's validation pass.",
             "- `naive-79` cannot use the auxiliary head (the 299 stem's head needs a 299 input), so it trains "
             "without it; every other setting is shared.", ""]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+,\s*)*-?[\d.eE+-]+)\s*\]")


def dumps_compact(data: Any) -> str:
    """Indented JSON with every list of plain numbers on one line (confusion matrices stay readable)."""
    text = json_line(_jsonable(data), indent=1)  # strict JSON: NaN/Infinity become null
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json (everything) and report.md into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    atomic_write_text(paths["json"], dumps_compact(report) + "\n")
    atomic_write_text(paths["md"], render_markdown(report))
    return paths
