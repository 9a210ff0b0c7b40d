"""The report's reading: plain-language sentences generated from the numbers (the bullets of report.md).

Each contrast gets a verdict against the paper's Table 2 gap ("agrees", "consistent but cannot tell apart",
"disagrees", ...) decided by its paired confidence interval alone, so the words can never outrun the data.
"""
from __future__ import annotations

from typing import Any

__all__ = ["reading", "pct", "pts"]


def pct(x: float | None, digits: int = 1) -> str:
    """Proportion as a percentage string; "n/a" for a missing value."""
    return "n/a" if x is None or x != x else f"{100 * x:.{digits}f}"


def pts(x: float) -> str:
    """Proportion difference as signed percentage points."""
    return f"{100 * x:+.1f}"


def _verdict_vs_number(lo: float, hi: float, paper: float) -> str:
    has_zero, has_paper = lo <= 0 <= hi, lo <= paper <= hi
    if has_paper and has_zero:
        return (f"consistent with the paper's {pts(paper)} points, but also with no difference: this sample "
                "cannot tell them apart")
    if has_paper:
        return f"agrees with the paper: the interval holds its {pts(paper)} points and excludes zero"
    if has_zero:
        return (f"the paper's {pts(paper)} points lies outside the interval, which holds zero: no detectable "
                "difference here")
    same_sign = (lo > 0) == (paper > 0)
    if same_sign:
        size = "larger" if abs(lo + hi) / 2 > abs(paper) else "smaller"
        return f"same direction as the paper's {pts(paper)} points, but a {size} gap: agrees in sign only"
    return f"disagrees with the paper: opposite sign to its {pts(paper)} points, and the interval excludes zero"


def _verdict_sign(lo: float, hi: float, a: str, b: str) -> str:
    a, b = f"`{a}`", f"`{b}`"
    if hi < 0:
        return f"{a} is worse than {b} (the interval excludes zero)"
    if lo > 0:
        return f"{a} is better than {b} (the interval excludes zero)"
    return f"no detectable difference between {a} and {b} (the interval holds zero)"


def _contrast_sentence(c: dict[str, Any]) -> str:
    lo, hi = c["ci"]
    overlap = "overlap" if c["cis_overlap"] else "do not overlap"
    head = (f"**{c['a']} - {c['b']}** ({c['question']}): {pts(c['delta'])} points top-1, paired 95% CI "
            f"[{pts(lo)}, {pts(hi)}]; the two variants' own intervals {overlap}. ")
    if lo == hi == c["delta"] == 0:
        return head + "The two were right on exactly the same crops: no difference at all on this sample."
    if c["paper_delta"] is not None:
        return head + _capital(_verdict_vs_number(lo, hi, c["paper_delta"])) + "."
    verdict = _capital(_verdict_sign(lo, hi, c["a"], c["b"]))
    if c["a"] == "naive-79":
        agrees = "agrees with" if hi < 0 else "does not confirm"
        return head + f"{verdict}: this {agrees} the paper's 'much worse'."
    return head + verdict + "."


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _order_sentence(rows: dict[str, dict[str, Any]]) -> str | None:
    stems = [n for n in ("299", "151", "79") if n in rows]
    if len(stems) < 2:
        return None
    ours = sorted(stems, key=lambda n: -rows[n]["top1"])
    ranked = f"{ours[0]} ({100 * rows[ours[0]]['top1']:.1f}%)"
    for prev, n in zip(ours, ours[1:]):
        ranked += f" {'>' if rows[prev]['top1'] > rows[n]['top1'] else '='} {n} ({100 * rows[n]['top1']:.1f}%)"
    tied = len({rows[n]["top1"] for n in stems}) < len(stems)
    agree = ("a tie, where the paper has" if tied else "the same order as the paper's" if ours == stems
             else "a different order from the paper's")
    return f"Order of the three stems by top-1: {ranked}; {agree} 299 > 151 > 79 (76.6 > 76.4 > 75.2)."


def _small_sentence(rows: dict[str, dict[str, Any]]) -> str | None:
    cells = {n: r["size_buckets"]["small"] for n, r in rows.items() if r["size_buckets"]["small"]["top1"] is not None}
    if not cells:
        return None
    best = max(cells, key=lambda n: cells[n]["top1"])
    parts = ", ".join(f"{n} {100 * c['top1']:.1f}%" for n, c in cells.items())
    return (f"On small objects (area < 32^2, {next(iter(cells.values()))['count']} crops): {parts}; best: {best}. "
            "The paper reports no per-size numbers; small buckets are small samples, read them with care.")


def _cost_sentence(rows: dict[str, dict[str, Any]]) -> str | None:
    if "299" not in rows:
        return None
    base = rows["299"]
    parts = [f"{n} {r['gflops'] / base['gflops']:.2f}x the FLOPs and {r['images_per_s'] / base['images_per_s']:.2f}x "
             "the images/s" for n, r in rows.items() if n != "299"]
    return (f"Cost relative to 299 ({base['gflops']:.3f} GFLOPs, {base['images_per_s']:.0f} images/s here): "
            + "; ".join(parts) + ".") if parts else None


def _baseline_sentence(report: dict[str, Any]) -> str | None:
    """The score of always answering the most frequent class: the floor every top-1 must be read against."""
    runs = next(iter(report.get("runs", {}).values()), None)
    per_class = runs[0]["metrics"].get("per_class") if runs else None
    if not per_class:
        return None
    total = sum(c["count"] for c in per_class)
    top = max(per_class, key=lambda c: c["count"])
    if not total:
        return None
    share = top["count"] / total
    best = max(report["rows"], key=lambda r: r["top1"] or 0.0)
    return (f"Floor: the most frequent class, '{top['name']}', is {pct(share)}% of the validation crops, so always "
            f"answering it scores {pct(share)}% top-1; the best variant ({best['variant']}, {pct(best['top1'])}%) is "
            f"{(best['top1'] - share) * 100:+.1f} points above that floor, and balanced accuracy (mean per-class "
            "accuracy) shows how much of the rest the networks learned.")


def reading(report: dict[str, Any]) -> list[str]:
    """A short plain-language reading generated from the numbers (bullets of report.md)."""
    rows = {r["variant"]: r for r in report["rows"]}
    d = report["data"]
    out = []
    if d["synthetic"]:
        out.append("These numbers come from the generated synthetic set: they check the pipeline and say "
                   "nothing about COCO or the paper.")
    baseline = _baseline_sentence(report)
    out += [baseline] if baseline else []
    order = _order_sentence(rows)
    out += [order] if order else []
    out += [_contrast_sentence(c) for c in report["contrasts"]]
    small = _small_sentence(rows)
    out += [small] if small else []
    cost = _cost_sentence(rows)
    out += [cost] if cost else []
    row0 = report["rows"][0]
    out.append(f"Scale: the paper trains 1.28M ImageNet images of 1000 classes for 100 epochs at width 1.0; this run "
               f"trains {d['num_train']:,} crops of {d['num_classes']} classes for {row0['epochs']} epochs at width "
               f"{row0['width']:g} and tests on {d['num_val']:,} crops. Absolute top-1 is not comparable with Table 2; "
               "the order and the gaps are what this report compares.")
    return out
