"""The measuring sections of ``gpu_check.py``: model speed (eager, compiled), the input pipeline, the optimiser paths.

Each section is a function ``(plan, work, emit)`` run in a child process of its own (so the orchestrator can stop
it at its time limit); it calls ``emit(result)`` after every row, which writes the result so far, so a section
stopped for time still reports the rows it finished. Every timed call goes through the project's own code:
the models of ``lowres.build_model`` and torchvision, the step of ``_common.train_step_call`` (the paper's
recipe, as ``train_one_epoch`` takes it), ``lowres.models.compile_model``, ``lowres.training.data``'s loaders, and
``benchmarks/host_overhead.py``'s optimiser + EMA step.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from _common import inference_call, synchronize, time_per_call, train_step_call  # noqa: E402 (benchmarks/ on the path)
from _gpu_plan import Plan

Emit = Callable[[dict], None]


def environment(plan: Plan, work: Path, emit: Emit) -> None:
    """What ran: versions, the device, what it supports."""
    import platform

    import torchvision

    out: dict[str, Any] = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                           "python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                           "cuda_available": torch.cuda.is_available(), "device": plan.device}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gb=props.total_memory / 1e9,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(),
                   nccl_available=torch.distributed.is_available() and torch.distributed.is_nccl_available())
    emit(out)


def _model(name: str, plan: Plan, device: torch.device, train: bool) -> tuple[torch.nn.Module, int]:
    """torchvision's Inception-v3 (always width 1.0) or a lowres stem at the plan's width, NHWC on ``device``."""
    if name == "torchvision-299":
        import torchvision

        model, size = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False), 299
    else:
        from lowres import build_model

        size = int(name.split("-")[1])
        model = build_model(size, 1000, width=plan.width, min_depth=plan.min_depth, aux_logits=True)
    model = model.to(device, memory_format=torch.channels_last)
    return (model.train() if train else model.eval()), size


def _inputs(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 1000, (batch,), device=device)


def _peak_mb(call: Callable[[], object], device: torch.device) -> float | None:
    """GPU memory the call takes above what was resident before it (activations, gradients, workspaces)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _row(model: str, what: str, batch: int, mode: str, rates: list[float], **extra: Any) -> dict[str, Any]:
    return {"model": model, "what": what, "batch": batch, "mode": mode, "images_per_s": statistics.median(rates),
            "spread": [min(rates), max(rates)], "rounds": len(rates), **extra}


def eager(plan: Plan, work: Path, emit: Emit) -> None:
    """Forward and training-step images/s, bf16 + channels_last, each model and batch, in interleaved rounds
    (a model's median over rounds; ratios against torchvision at 299 with the same batch and step)."""
    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as lowres train sets it on CUDA (train.deterministic off)
    calls: dict[tuple[str, str, int], Callable[[], object]] = {}
    peaks: dict[tuple[str, str, int], float | None] = {}
    for name in plan.models:
        for what in ("forward", "train"):
            model, size = _model(name, plan, device, train=what == "train")
            for batch in plan.batches:
                x, y = _inputs(batch, size, device)
                call = train_step_call(model, x, y, plan.precision) if what == "train" else \
                    inference_call(model, x, plan.precision)
                call()  # cuDNN picks its algorithms for this shape; the optimiser state is created
                peaks[(name, what, batch)] = _peak_mb(call, device)
                calls[(name, what, batch)] = call
    rates: dict[tuple[str, str, int], list[float]] = {k: [] for k in calls}
    result: dict[str, Any] = {"precision": plan.precision, "channels_last": True, "width": plan.width, "rows": []}
    for r in range(plan.rounds):
        for key, call in calls.items():
            batch = key[2]
            rates[key].append(batch / time_per_call(call, warmup=plan.warmup, iters=plan.iters))
        result["rows"] = [_row(n, w, b, "eager", v, peak_mb=peaks[(n, w, b)]) for (n, w, b), v in rates.items()]
        result["rounds_done"] = r + 1
        emit(result)


def compiled(plan: Plan, work: Path, emit: Emit) -> None:
    """The same rows through ``lowres.models.compile_model`` (torchvision's model through ``nn.Module.compile``
    alike), one static-shape compilation per row, most wanted rows first; the first call's wall time is the
    compile time. A fresh model per row, so no row reuses another's graphs."""
    import torch._dynamo

    from lowres.models import compile_model

    torch._dynamo.config.automatic_dynamic_shapes = False  # batch 128 and 256: two static graphs, as a run has one
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"backend": plan.compile_backend, "precision": plan.precision, "width": plan.width,
                              "rows": []}
    for batch, name, what in plan.compiled_rows:
        model, size = _model(name, plan, device, train=what == "train")
        model = compile_model(model, backend=plan.compile_backend)
        x, y = _inputs(batch, size, device)
        call = train_step_call(model, x, y, plan.precision) if what == "train" else inference_call(model, x, plan.precision)
        start = time.perf_counter()
        call()
        compile_s = time.perf_counter() - start
        peak = _peak_mb(call, device)
        rates = [batch / time_per_call(call, warmup=plan.warmup, iters=plan.iters) for _ in range(plan.rounds)]
        result["rows"].append(_row(name, what, batch, "compiled", rates, compile_s=compile_s, peak_mb=peak))
        emit(result)
        del model, call
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _loader_rate(split: Any, cfg: Any, seconds: float) -> dict[str, float]:
    """Crops/s the training loader sustains (``lowres.training.data.train_loader``, pinned memory on CUDA),
    over whole epochs until ``seconds`` have passed; each epoch's first batch (worker start-up) is timed apart."""
    from lowres.training.data import train_loader
    from lowres.training.distributed import DistEnv, ResumableSampler

    sampler = ResumableSampler(split.dataset, env=DistEnv(), shuffle=True, seed=cfg.train.seed)
    loader = train_loader(split, sampler, cfg)
    steady_n, steady_s, firsts, epoch, start = 0, 0.0, [], 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steady_n == 0:
        sampler.set_position(epoch, 0)
        loader.dataset.set_epoch(epoch)
        t = time.perf_counter()
        for k, batch in enumerate(loader):
            now = time.perf_counter()
            if k == 0:
                firsts.append(now - t)
            else:
                steady_n, steady_s = steady_n + batch[0].shape[0], steady_s + now - t
            t = now
        epoch += 1
        if epoch > 1000:
            break
    return {"crops_per_s": steady_n / max(steady_s, 1e-9), "first_batch_s": statistics.median(firsts),
            "epochs": epoch, "timed_crops": steady_n}


def input_pipeline(plan: Plan, work: Path, emit: Emit) -> None:
    """The training loader's sustained crops/s at 79 px with N workers, from the crop shard cache (COCO layout)
    and from the decoded-image store (ImageNet layout): set against the training step's rate by the report."""
    from lowres.config import load_config
    from lowres.training.data import load_split_data
    from lowres.training.distributed import DistEnv

    result: dict[str, Any] = {"batch": plan.pipeline_batch, "size": 79, "rows": []}
    sources = (("crop shard cache", plan.coco), ("decoded-image store", plan.imagenette))
    for source, data in sources:
        if data is None:
            result["rows"].append({"source": source, "skipped": "no data folder of this layout was found or given"})
            emit(result)
            continue
        base = [f"data.cache_dir={work / 'cache'}", f"train.batch_size={plan.pipeline_batch}",
                f"data.max_train={'null' if plan.pipeline_max_train is None else plan.pipeline_max_train}"]
        cfg = load_config("paper", base, stem=79, data=data)
        build = time.perf_counter()
        split = load_split_data(Path(data), cfg.data.train_split, cfg, train=True, env=DistEnv())
        build_s = time.perf_counter() - build
        for workers in plan.pipeline_workers:
            cfg_w = load_config("paper", [*base, f"data.num_workers={workers}"], stem=79, data=data)
            rate = _loader_rate(split, cfg_w, plan.pipeline_seconds)
            result["rows"].append({"source": source, "data": str(data), "samples": len(split.records),
                                   "workers": workers, "open_or_build_s": build_s,
                                   "pin_memory": torch.cuda.is_available(), **rate})
            emit(result)


def foreach(plan: Plan, work: Path, emit: Emit) -> None:
    """``RMSpropTF`` + ``ModelEma``: the multi-tensor path against the per-tensor loop on the plan's device, from
    the same weights and gradients (``benchmarks/host_overhead.py``'s step): equal within tolerance after
    ``foreach_steps`` steps, and each path's time per step, waited for and host-only (dispatch, not waited for)."""
    import host_overhead

    device = plan.device
    paths = {"per-tensor loop": host_overhead.setup(plan.foreach_width, False, device),
             "foreach": host_overhead.setup(plan.foreach_width, True, device)}
    for _ in range(plan.foreach_steps):
        for _, _, step in paths.values():
            step()
    (m_loop, e_loop, _), (m_fe, e_fe, _) = paths.values()
    diffs = [(a - b).abs().max().item() for a, b in zip(
        [*m_loop.state_dict().values(), *e_loop.module.state_dict().values()],
        [*m_fe.state_dict().values(), *e_fe.module.state_dict().values()]) if a.is_floating_point()]
    scale = max(p.abs().max().item() for p in m_loop.parameters())
    result: dict[str, Any] = {"device": device, "width": plan.foreach_width, "steps_compared": plan.foreach_steps,
                              "tensors": len(list(m_loop.parameters())), "max_abs_diff": max(diffs),
                              "largest_weight": scale, "tolerance": 1e-5 * scale,
                              "equal_within_tolerance": max(diffs) <= 1e-5 * scale, "rows": []}
    iters = max(plan.iters, 3)
    for name, (_, _, step) in paths.items():
        waited = time_per_call(host_overhead.waited(step, device), warmup=1, iters=iters)
        host = host_overhead.host_seconds(step, device, iters)
        calls = host_overhead.operator_calls(step)
        result["rows"].append({"path": name, "ms_per_step": 1e3 * waited, "host_ms_per_step": 1e3 * host,
                               "python_operator_calls": calls[0], "all_aten_calls": calls[1]})
        emit(result)


SECTIONS: dict[str, Callable[[Plan, Path, Emit], None]] = {
    "environment": environment, "eager": eager, "input_pipeline": input_pipeline, "foreach": foreach,
    "compiled": compiled}
