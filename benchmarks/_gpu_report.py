"""``gpu_check.py``'s answers and markdown summary, computed from its JSON alone (so a report cut short by a kill
or by the budget still reads right: a missing section is named as missing, never filled in)."""
from __future__ import annotations

from typing import Any


def _result(report: dict[str, Any], name: str) -> dict[str, Any]:
    return report["sections"].get(name, {}).get("result") or {}


def _speed_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every eager and compiled row with its ratio to torchvision's Inception-v3 at 299 (same step, batch, mode)."""
    rows = [*_result(report, "eager").get("rows", []), *_result(report, "compiled").get("rows", [])]
    base = {(r["what"], r["batch"], r["mode"]): r["images_per_s"] for r in rows if r["model"] == "torchvision-299"}
    out = []
    for r in rows:
        b = base.get((r["what"], r["batch"], r["mode"]))
        out.append({**r, "vs_torchvision_299": r["images_per_s"] / b if b else None})
    return out


def _input_vs_step(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each loader row against the 79 stem's eager training step at the largest batch measured."""
    steps = [r for r in _result(report, "eager").get("rows", []) if r["model"] == "lowres-79" and r["what"] == "train"]
    step = max(steps, key=lambda r: r["batch"], default=None)
    out = []
    for r in _result(report, "input_pipeline").get("rows", []):
        if "crops_per_s" not in r:
            out.append(r)
            continue
        row = {"source": r["source"], "workers": r["workers"], "crops_per_s": r["crops_per_s"]}
        if step:
            row.update(step_images_per_s=step["images_per_s"], step_batch=step["batch"],
                       loader_over_step=r["crops_per_s"] / step["images_per_s"],
                       gpu_starved=r["crops_per_s"] < step["images_per_s"])
        out.append(row)
    return out


def answers(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, each from the section that measured it, or None where it did not run."""
    run, tr, fe = _result(report, "short_run"), _result(report, "torchrun"), _result(report, "foreach")
    resume = [{k: r.get(k) for k in ("train.deterministic", "killed_at_step", "bitwise_equal", "max_abs_diff",
                                     "tensors_differing", "history_equal")}
              | {"killed": (r.get("killed") or {}).get("killed"), "error": (r.get("straight") or {}).get("error")}
              for r in run.get("resume", [])]
    return {
        "status": {name: s["status"] for name, s in report["sections"].items()},
        "speed": _speed_rows(report),
        "input_vs_step": _input_vs_step(report),
        "resume": resume,
        "eval_rc": (run.get("eval") or {}).get("rc"), "rescore_rc": (run.get("rescore") or {}).get("rc"),
        "bf16_vs_fp32": run.get("bf16_vs_fp32"),
        "torchrun": {k: tr.get(k) for k in ("backends", "nccl_log_lines", "epochs_done", "resumed_from_epoch_1")}
        if tr else None,
        "foreach": {k: fe.get(k) for k in ("equal_within_tolerance", "max_abs_diff", "tolerance", "rows")} if fe else None,
        "cuda_tests": _result(report, "cuda_tests").get("counts"),
    }


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """A person's page: what ran, then one table or line per answer."""
    a = report["answers"]
    what = "dry run on the CPU: sizes prove the code path, not the GPU" if report["dry_run"] else report["device"]
    lines = [f"# gpu_check ({what})",
             "", f"torch {report['torch']}, budget {report['budget_s']:.0f} s, elapsed {report['elapsed_s']:.0f} s",
             "", "| section | status | seconds | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['status']} | {s['seconds']:.1f} | {s['limit_s']:.0f} |" for n, s in report["sections"].items()]
    env = _result(report, "environment")
    if env:
        lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items())]
    lines += ["", "## Speed (bf16, channels_last)", "",
              "| model | step | batch | mode | images/s (median) | spread | vs torchvision-299 | peak MB | compile s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in a["speed"]:
        lines.append(f"| {r['model']} | {r['what']} | {r['batch']} | {r['mode']} | {_fmt(r['images_per_s'])} | "
                     f"{_fmt(r['spread'][0])}-{_fmt(r['spread'][1])} | {_fmt(r['vs_torchvision_299'], '.2f')} | "
                     f"{_fmt(r.get('peak_mb'), '.0f')} | {_fmt(r.get('compile_s'))} |")
    lines += ["", "## Input pipeline against the 79 px training step", "",
              "| source | workers | crops/s | step images/s (batch) | loader / step | GPU starved |",
              "|---|---|---|---|---|---|"]
    for r in a["input_vs_step"]:
        if "skipped" in r:
            lines.append(f"| {r['source']} | skipped: {r['skipped']} | | | | |")
            continue
        lines.append(f"| {r['source']} | {r['workers']} | {_fmt(r['crops_per_s'], '.0f')} | "
                     f"{_fmt(r.get('step_images_per_s'), '.0f')} ({_fmt(r.get('step_batch'))}) | "
                     f"{_fmt(r.get('loader_over_step'), '.2f')} | {_fmt(r.get('gpu_starved'))} |")
    lines += ["", "## Runs through the command line", ""]
    for r in a["resume"]:
        lines.append(f"- resume (train.deterministic={r['train.deterministic']}): killed {_fmt(r['killed'])} at step "
                     f"{_fmt(r['killed_at_step'])}; bit-for-bit equal {_fmt(r['bitwise_equal'])}, largest difference "
                     f"{_fmt(r['max_abs_diff'], '.3g')} over {_fmt(r['tensors_differing'])} differing tensors"
                     + (f"; failed: {' / '.join(r['error'])}" if r["error"] else ""))
    lines.append(f"- lowres eval exit {_fmt(a['eval_rc'])}, lowres rescore exit {_fmt(a['rescore_rc'])}")
    if a["bf16_vs_fp32"]:
        b = a["bf16_vs_fp32"]
        lines.append(f"- bf16 vs fp32 on {b['crops']} val crops: top-1 {b['top1_bf16']:.4f} vs {b['top1_fp32']:.4f}, "
                     f"same top-1 prediction on {100 * b['same_top1_prediction']:.1f}% of crops")
    if a["torchrun"]:
        t = a["torchrun"]
        lines.append(f"- torchrun --nproc_per_node 1: backend {_fmt(t['backends'])}, {_fmt(t['nccl_log_lines'])} NCCL "
                     f"log lines, epochs done {_fmt(t['epochs_done'])}, resumed {_fmt(t['resumed_from_epoch_1'])}")
    if a["foreach"]:
        f = a["foreach"]
        lines.append(f"- foreach vs loop: equal within {f['tolerance']:.2g}: {f['equal_within_tolerance']} (largest "
                     f"difference {f['max_abs_diff']:.3g}); " + "; ".join(
                         f"{r['path']} {r['ms_per_step']:.2f} ms/step ({r['host_ms_per_step']:.2f} ms on the host, "
                         f"{r['python_operator_calls']} Python operator calls)" for r in f["rows"]))
    lines.append(f"- cuda tests: {_fmt(a['cuda_tests'])}")
    return "\n".join(lines) + "\n"
