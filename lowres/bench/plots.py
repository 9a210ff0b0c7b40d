"""The report's PNG plots (matplotlib, Agg backend: no display needed).

- ``top1_vs_input.png``: top-1 against crop side with 95% CI bars, beside the paper's Table 2 on the same
  0-100% axis, with the majority-class floor;
- ``top1_by_size.png`` (COCO crops) or ``top1_by_class.png`` (ImageNet-layout images): top-1 per size bucket
  or per class for every variant (counts in the legend, values on the bars, 0% bars marked, groups of few
  crops hatched), with the floor;
- ``learning_curves.png``: one panel per variant from its run's scalars.csv (as training wrote it): loss per
  logged step and per epoch, train accuracy and validation top-1 per epoch (one line style per seed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..models.stems import STEMS
from ..training.monitor import epoch_series, read_scalars
from .report import bucket_names, has_size_buckets

__all__ = ["write_plots", "run_curves"]

_MARKERS = {"naive-79": "v", "upsample-79": "^"}  # the stems: "o"
_OFFSET = {"naive-79": -6, "upsample-79": 6}  # px, so the three 79 px points do not hide each other


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def _floor_line(ax: Any, report: dict[str, Any]) -> None:
    """The majority-class floor as a dashed line: a top-1 below it is worse than always answering that class."""
    f = report.get("floor")
    if f:
        ax.axhline(100 * f["share"], ls="--", lw=1, color="0.4",
                   label=f"floor: always '{f['name']}' ({100 * f['share']:.1f}%)")


def _top1_vs_input(report: dict[str, Any], path: Path) -> None:
    """Ours beside the paper's Table 2 on the same 0-100% axis, so neither panel magnifies a small gap."""
    plt = _pyplot()
    fig, (ax, paper_ax) = plt.subplots(1, 2, figsize=(10, 4), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    rows = {r["variant"]: r for r in report["rows"]}
    stems = [str(s) for s in sorted(STEMS) if str(s) in rows]
    if stems:
        ax.plot([rows[n]["crop"] for n in stems], [100 * rows[n]["top1"] for n in stems], "-", color="C0", alpha=0.5)
    for i, (name, r) in enumerate(rows.items()):
        lo, hi = r["top1_ci"]
        y = 100 * r["top1"]
        ax.errorbar(r["crop"] + _OFFSET.get(name, 0), y, yerr=[[y - 100 * lo], [100 * hi - y]],
                    fmt=_MARKERS.get(name, "o"), color=f"C{i}", capsize=4, label=f"{name} ({r['gflops']:.2f} GFLOPs)")
    _floor_line(ax, report)
    ax.set(xlabel="crop side (px, from the original pixels)", ylabel="top-1 (%)", ylim=(0, 100),
           title=f"ours: {report['data']['num_val']:,} validation crops, 95% CI")
    ax.set_xticks(sorted(STEMS))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paper = report["paper_table2"]
    sizes = sorted(int(k) for k in paper)
    paper_ax.plot(sizes, [100 * paper[str(s)] for s in sizes], "o-", color="gray")
    for s in sizes:
        paper_ax.annotate(f"{100 * paper[str(s)]:.1f}", (s, 100 * paper[str(s)]), textcoords="offset points",
                          xytext=(0, -14), ha="center", fontsize=8)
    paper_ax.set(xlabel="input side (px)", title="paper, Table 2 (ILSVRC-12), same axis")
    paper_ax.set_xticks(sizes)
    paper_ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


SMALL_N = 30  # groups with fewer crops are hatched: their top-1 moves by 3+ points per crop


def _top1_by_group(report: dict[str, Any], path: Path) -> None:
    """Top-1 per COCO size bucket (object crops) or per class (ImageNet-layout images), every variant. Each bar
    is labelled with its value, a 0% bar gets a marker so it is seen, and groups of few crops are hatched
    (their numbers are anecdotes)."""
    plt = _pyplot()
    rows = report["rows"]
    buckets = bucket_names(report)
    key, names = ("size_buckets", buckets) if buckets else ("per_class", list(rows[0]["per_class"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) * (len(names) + 1)), 4.2))
    width = 0.8 / (len(names) + 1)
    counts = rows[0][key]
    groups = [("all", lambda r: r["top1"], report["data"]["num_val"])]
    groups += [(b, lambda r, b=b: r[key][b]["top1"], counts[b]["count"]) for b in names]
    for j, (label, value, n) in enumerate(groups):
        xs = [i + (j - len(groups) / 2 + 0.5) * width for i in range(len(rows))]
        ys = [100 * (value(r) or 0.0) for r in rows]
        few, colour = n < SMALL_N, f"C{j % 10}"
        ax.bar(xs, ys, width, label=f"{label} (n={n}{', few' if few else ''})", color=colour,
               hatch="//" if few else None, edgecolor="black" if few else None, linewidth=0.5)
        ax.plot([x for x, y in zip(xs, ys) if y == 0], [0] * sum(y == 0 for y in ys), "^", color=colour,
                markersize=6, clip_on=False)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6)
    _floor_line(ax, report)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["variant"] for r in rows])
    title = ("top-1 by COCO object size (area < 32², < 96², larger)" if key == "size_buckets"
             else "top-1 by class (validation images)")
    ax.set(ylabel="top-1 (%)", ylim=(0, 100), title=title)
    ax.legend(fontsize=7, ncol=2 + len(names) // 6)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _curve_panel(ax: Any, name: str, runs: list[dict[str, Any]]) -> None:
    """Loss per logged step (thin) and per epoch, train accuracy and validation top-1 per epoch, per seed.
    The series come from each run's scalars.csv (what training wrote), else from its metrics.jsonl history."""
    acc_ax = ax.twinx()
    for k, run in enumerate(runs):
        c = run.get("curves") or _curves_from_history(run["history"])
        ls = ["-", "--", ":", "-."][k % 4]
        first = k == 0
        if c.get("step_loss"):
            ax.plot(*zip(*c["step_loss"]), ls, lw=0.7, alpha=0.5, color="C3", label="loss per step" if first else None)
        ax.plot(*zip(*c["train_loss"]), ls, marker="o", ms=3, color="C3", label="train loss" if first else None)
        acc_ax.plot(*zip(*c["train_acc"]), ls, marker="o", ms=3, color="C0", label="train acc" if first else None)
        if c.get("val_top1"):
            acc_ax.plot(*zip(*c["val_top1"]), ls, marker="s", ms=3, color="C2", label="val top-1" if first else None)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    acc_ax.set_ylim(0, 100)
    ax.set_title(f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="C3")
    acc_ax.set_ylabel("%", color="C2")
    lines = ax.get_legend_handles_labels()
    more = acc_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="upper right")
    ax.grid(alpha=0.3)


def _curves_from_history(history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """The epoch series of a metrics.jsonl history (runs trained before scalars.csv existed)."""
    def series(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(line["epoch"], scale * line[key]) for line in history if line.get(key) is not None]

    return {"train_loss": series("train_loss"), "train_acc": series("train_acc", 100.0),
            "val_top1": series("val_top1", 100.0)}


def run_curves(run_dir: str | Path, history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """A run's learning curves from its scalars.csv (the file training wrote), or from ``history``."""
    rows = read_scalars(run_dir)
    if not rows:
        return _curves_from_history(history)
    pct = [(e, 100.0 * v) for e, v in epoch_series(rows, "epoch/train_acc")]
    return {"step_loss": epoch_series(rows, "step/loss"), "train_loss": epoch_series(rows, "epoch/train_loss"),
            "train_acc": pct, "val_top1": [(e, 100.0 * v) for e, v in epoch_series(rows, "epoch/val_top1")]}


def _learning_curves(report: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = list(report["runs"])
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        _curve_panel(ax, name, report["runs"][name])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Write the three PNGs into ``out_dir``; returns their file names (empty without matplotlib)."""
    try:
        _pyplot()
    except ImportError:
        return []
    by_group = "top1_by_size.png" if has_size_buckets(report) else "top1_by_class.png"
    plots = {"top1_vs_input.png": _top1_vs_input, by_group: _top1_by_group,
             "learning_curves.png": _learning_curves}
    for name, draw in plots.items():
        draw(report, out_dir / name)
    return list(plots)
