"""The report's reading: plain-language sentences generated from the numbers (the bullets of report.md).

Each contrast gets a verdict against the paper's Table 2 gap ("agrees", "consistent but cannot tell apart",
"disagrees", ...) decided by its paired confidence interval alone, so the words can never outrun the data.
"""
from __future__ import annotations

from typing import Any

from .measure import speeds_differ

__all__ = ["reading", "pct", "pts", "floor", "leaders"]


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
    over = "images and seeds" if max(c.get("seeds") or [1]) > 1 else "images, paired"
    head = (f"**{c['a']} - {c['b']}** ({c['question']}): {pts(c['delta'])} points top-1, 95% CI over {over} "
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


def leaders(values: dict[str, float | None]) -> list[str]:
    """The names holding the highest value: several in a tie, none when that value is 0 (nobody won anything)."""
    known = {n: v for n, v in values.items() if v is not None}
    if not known:
        return []
    top = max(known.values())
    return [] if top <= 0 else [n for n, v in known.items() if v == top]


def _named(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
    cells = {n: r["size_buckets"]["small"] for n, r in rows.items()
             if r["size_buckets"].get("small", {}).get("top1") is not None}
    if not cells:
        return None
    top = leaders({n: c["top1"] for n, c in cells.items()})
    parts = ", ".join(f"{n} {100 * c['top1']:.1f}%" for n, c in cells.items())
    verdict = ("no variant got any small crop right" if not top else f"highest: {top[0]}" if len(top) == 1
               else f"a tie at the top between {_named(top)}")
    return (f"On small objects (area < 32^2, {next(iter(cells.values()))['count']} crops): {parts}; {verdict}. "
            "The paper reports no per-size numbers; small buckets are small samples, read them with care.")


def _speed_ratio(name: str, r: dict[str, Any], base: dict[str, Any]) -> str:
    """A speed ratio only where the two ranges over rounds do not overlap (else: cannot be told apart)."""
    a = {"rounds": r.get("images_per_s_rounds")}
    b = {"rounds": base.get("images_per_s_rounds")}
    if speeds_differ(a, b):
        return f"{r['images_per_s'] / base['images_per_s']:.2f}x the images/s"
    return "images/s not distinguishable from 299's (the ranges of the rounds overlap)"


def _cost_sentence(rows: dict[str, dict[str, Any]]) -> str | None:
    if "299" not in rows:
        return None
    base = rows["299"]
    parts = [f"{n} {r['gflops'] / base['gflops']:.2f}x the FLOPs, {_speed_ratio(n, r, base)}"
             for n, r in rows.items() if n != "299"]
    lo, hi = base.get("images_per_s_spread") or [base["images_per_s"]] * 2
    return (f"Cost relative to 299 ({base['gflops']:.3f} GFLOPs; {base['images_per_s']:.0f} images/s here, median of "
            f"{len(base.get('images_per_s_rounds') or [])} rounds, range {lo:.0f}-{hi:.0f}): "
            + "; ".join(parts) + ".") if parts else None


def floor(report: dict[str, Any]) -> dict[str, Any] | None:
    """``{"name", "share"}``: always answering the most frequent validation class scores ``share`` top-1."""
    runs = next(iter(report.get("runs", {}).values()), None)
    per_class = runs[0]["metrics"].get("per_class") if runs else None
    total = sum(c["count"] for c in per_class) if per_class else 0
    if not total:
        return None
    top = max(per_class, key=lambda c: c["count"])
    return {"name": top["name"], "share": top["count"] / total}


def _baseline_sentence(report: dict[str, Any]) -> str | None:
    """The floor every top-1 must be read against, and where the best variant(s) stand relative to it."""
    f = floor(report)
    if f is None:
        return None
    share = f["share"]
    head = (f"Floor: the most frequent class, '{f['name']}', is {pct(share)}% of the validation crops, so always "
            f"answering it scores {pct(share)}% top-1; ")
    top = leaders({r["variant"]: r["top1"] for r in report["rows"]})
    if not top:
        return head + "no variant got a single validation crop right (0.0% top-1), so nothing was learned."
    best = next(r["top1"] for r in report["rows"] if r["variant"] == top[0])
    who = (f"the best variant ({top[0]}, {pct(best)}%)" if len(top) == 1
           else f"the best variants ({_named(top)}, tied at {pct(best)}%)")
    gap = (best - share) * 100
    where = (f"is {gap:.1f} points above that floor" if gap >= 0.05 else
             f"is {-gap:.1f} points below that floor: worse than always answering '{f['name']}'" if gap <= -0.05
             else "is at that floor")
    if len(top) > 1:
        where = where.replace("is ", "are ", 1)
    return (head + f"{who} {where}; balanced accuracy (mean per-class accuracy) shows how much of the rest the "
            "networks learned.")


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
