"""The paper's training recipe as small, separately tested pieces (Szegedy et al. 2016, sections 7, 8, 10).

RMSProp in TensorFlow's form (epsilon inside the square root, square average starting at one), an
exponential staircase learning rate (0.045 x 0.94 every two epochs), gradient clipping at 2.0, label
smoothing 0.1, auxiliary loss weight 0.4 and an exponential moving average of the weights for evaluation.
SGD and AdamW with cosine decay and warm-up are offered for small data, where the paper's 100-epoch
schedule does not fit the budget.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSpropTF", "EpochLR", "ModelEma", "param_groups", "freeze_bn_stats", "build_optimizer", "build_scheduler",
           "inception_loss", "clip_gradients"]


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as TensorFlow computes it (paper section 8: decay 0.9, epsilon 1.0).

    Per parameter, with g = grad + weight_decay * p (L2 as TF-slim's regulariser adds it to the loss)::

        ms  = decay * ms + (1 - decay) * g^2          # ms starts at 1, not 0 (tf.ones_initializer)
        mom = momentum * mom + lr * g / sqrt(ms + eps) # eps inside the sqrt; lr inside the momentum
        p   = p - mom

    torch's ``RMSprop`` starts ``ms`` at zero and adds eps outside the sqrt; with eps = 1.0 those choices
    change the step size by a large factor, so the paper's values only mean what they meant with this form.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.045, decay: float = 0.9, eps: float = 1.0,
                 momentum: float = 0.9, weight_decay: float = 0.0, foreach: bool | None = None) -> None:
        if lr < 0 or eps < 0 or not 0.0 <= decay <= 1.0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid RMSpropTF hyper-parameters lr={lr} decay={decay} eps={eps}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, momentum=momentum, weight_decay=weight_decay))
        self.foreach = foreach

    def _group_state(self, group: dict[str, Any]) -> tuple[list, list, list, list, list]:
        """Parameters with a gradient and their state tensors (created on first use: ms = 1, mom = 0)."""
        params, grads, squares, buffers, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            squares.append(state["square_avg"])
            buffers.append(state["momentum_buffer"])
            steps.append(state["step"])
        return params, grads, squares, buffers, steps

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 (documented on the class)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensors = self._group_state(group)
            if not tensors[0]:
                continue
            if _use_foreach(self.foreach, tensors[0][0]):
                grouped = self._group_tensors_by_device_and_dtype([list(t) for t in tensors])
                for (params, grads, squares, buffers, steps), _ in grouped.values():
                    _rmsprop_tf_foreach(params, grads, squares, buffers, steps, group)
            else:
                for p, grad, square_avg, buf, step in zip(*tensors):
                    _rmsprop_tf_single(p, grad, square_avg, buf, step, group)
        return loss


def _use_foreach(foreach: bool | None, tensor: torch.Tensor) -> bool:
    """``None`` chooses as torch's own optimisers do: multi-tensor kernels on CUDA, where one Python dispatch
    per tensor (~3,800 per step at width 1.0) starves the GPU; the per-tensor loop on the CPU, where all ops
    of one tensor run while it is in cache and whole-model passes are memory-bound
    (``python benchmarks/host_overhead.py`` measures both; the README's "Host overhead per step" has the numbers)."""
    return tensor.is_cuda if foreach is None else foreach


def _rmsprop_tf_single(p: torch.Tensor, grad: torch.Tensor, square_avg: torch.Tensor, buf: torch.Tensor,
                       step: torch.Tensor, group: dict[str, Any]) -> None:
    """One parameter's update: the reference the multi-tensor path is tested against, op for op."""
    if group["weight_decay"]:
        grad = grad.add(p, alpha=group["weight_decay"])
    step += 1
    square_avg.mul_(group["decay"]).addcmul_(grad, grad, value=1.0 - group["decay"])
    update = grad / square_avg.add(group["eps"]).sqrt_()
    buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
    p.sub_(buf)


def _rmsprop_tf_foreach(params: list, grads: list, squares: list, buffers: list, steps: list,
                        group: dict[str, Any]) -> None:
    """The same update for all tensors of one device and dtype in a few multi-tensor kernels: the per-step
    host cost no longer grows with the ~300 tensors of the network (one Python loop step per op per tensor)."""
    if group["weight_decay"]:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    torch._foreach_add_(steps, 1)
    torch._foreach_mul_(squares, group["decay"])
    torch._foreach_addcmul_(squares, grads, grads, value=1.0 - group["decay"])
    denom = torch._foreach_add(squares, group["eps"])
    torch._foreach_sqrt_(denom)
    update = torch._foreach_div(grads, denom)
    torch._foreach_mul_(buffers, group["momentum"])
    torch._foreach_add_(buffers, update, alpha=group["lr"])
    torch._foreach_sub_(params, buffers)


class EpochLR:
    """Learning rate as a function of the optimiser step, defined in epochs (stepped once per batch).

    ``step``: lr * decay_rate ** floor(epoch / decay_epochs), TF's staircase exponential decay (paper section 8).
    ``cosine``: half-cosine from lr to lr * min_lr_factor over the run. ``constant``: lr.
    A linear warm-up from ``warmup_start * lr`` over ``warmup_epochs`` multiplies any of them.
    The state is the step count alone, so resuming is exact and a changed ``steps_per_epoch`` is detectable.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, name: str, steps_per_epoch: int, epochs: int,
                 decay_rate: float = 0.94, decay_epochs: float = 2.0, warmup_epochs: float = 0.0,
                 warmup_start: float = 0.1, min_lr_factor: float = 0.0) -> None:
        if name not in ("step", "cosine", "constant"):
            raise ValueError(f"unknown schedule {name!r}")
        if steps_per_epoch <= 0:
            raise ValueError("steps_per_epoch must be > 0")
        self.optimizer, self.name, self.steps_per_epoch, self.epochs = optimizer, name, steps_per_epoch, epochs
        self.decay_rate, self.decay_epochs = decay_rate, decay_epochs
        self.warmup_epochs, self.warmup_start, self.min_lr_factor = warmup_epochs, warmup_start, min_lr_factor
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """Multiplier of the base lr at optimiser step ``step`` (0-based: the lr used by the step-th update)."""
        epoch = step / self.steps_per_epoch
        if self.name == "step":
            f = self.decay_rate ** math.floor(epoch / self.decay_epochs)
        elif self.name == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-12)
            t = min(max(epoch - self.warmup_epochs, 0.0) / span, 1.0)
            f = self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            f = 1.0
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            f *= self.warmup_start + (1.0 - self.warmup_start) * epoch / self.warmup_epochs
        return f

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        """Advance one optimiser step and set the lr the next update will use."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "steps_per_epoch": self.steps_per_epoch, "name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"checkpoint schedule has {state['steps_per_epoch']} steps per epoch, "
                             f"this run {self.steps_per_epoch}: batch size or data changed")
        self.last_step = int(state["last_step"])
        self._apply()


class ModelEma:
    """Exponential moving average of every parameter and floating buffer (paper section 8, TF-slim's
    ``variables_to_average`` = trainable variables + BN moving statistics).

    The decay warms up as TF's ``ExponentialMovingAverage(num_updates=step)``:
    ``min(decay, (1 + n) / (10 + n))``, so early averages are not dominated by the random initialisation.
    Integer buffers (BN's ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, foreach: bool | None = None) -> None:
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.num_updates = 0
        self.foreach = foreach
        self._pairs: tuple[int, list, list, list, list] | None = None

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def _tensor_pairs(self, source: nn.Module) -> tuple[list, list, list, list]:
        """(EMA floats, source floats, EMA others, source others), matched by state-dict name and kept for
        the source module (its tensors are updated in place, so the lists stay valid): building two state
        dicts per step was most of the EMA's host cost."""
        if self._pairs is None or self._pairs[0] != id(source):
            src = source.state_dict(keep_vars=True)
            floats, src_floats, others, src_others = [], [], [], []
            for name, ema_t in self.module.state_dict(keep_vars=True).items():
                pair = (floats, src_floats) if ema_t.dtype.is_floating_point else (others, src_others)
                pair[0].append(ema_t.detach())
                pair[1].append(src[name].detach())
            self._pairs = (id(source), floats, src_floats, others, src_others)
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        floats, src_floats, others, src_others = self._tensor_pairs(_unwrap(model))
        src_floats = [s if s.dtype == e.dtype else s.to(e.dtype) for e, s in zip(floats, src_floats)]
        if floats and _use_foreach(self.foreach, floats[0]):
            torch._foreach_mul_(floats, d)
            torch._foreach_add_(floats, src_floats, alpha=1.0 - d)
            torch._foreach_copy_(others, src_others)
        else:
            for ema_t, src in zip(floats, src_floats):
                ema_t.mul_(d).add_(src, alpha=1.0 - d)
            for ema_t, src in zip(others, src_others):
                ema_t.copy_(src)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


HEAD_PREFIXES = ("fc.", "AuxLogits.")  # what a classifier of its own (never ImageNet's) has: optim.lr always


def param_groups(model: nn.Module, weight_decay: float, *, lr: float | None = None,
                 trunk_lr_factor: float = 1.0) -> list[dict[str, Any]]:
    """Weight decay on conv/fc weights only, as TF-slim's ``weights_regularizer``; none on BN or biases.

    With ``trunk_lr_factor`` != 1 the trunk's tensors get ``lr * trunk_lr_factor`` in groups of their own (after
    the head's, so ``param_groups[0]`` keeps the full lr): fine-tuning moves pretrained layers less than a new
    classifier (detectron2's backbone multiplier, the discriminative rates of fine-tuning recipes)."""
    split = trunk_lr_factor != 1.0
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(h, d): [] for h in (True, False) for d in (True, False)}
    for name, p in _unwrap(model).named_parameters():
        if p.requires_grad:
            groups[(name.startswith(HEAD_PREFIXES) or not split, p.ndim > 1)].append(p)
    out = [{"params": groups[(True, True)], "weight_decay": weight_decay},
           {"params": groups[(True, False)], "weight_decay": 0.0}]
    if split:
        if lr is None:
            raise ValueError("param_groups: trunk_lr_factor needs the base lr")
        out += [{"params": groups[(False, True)], "weight_decay": weight_decay, "lr": lr * trunk_lr_factor},
                {"params": groups[(False, False)], "weight_decay": 0.0, "lr": lr * trunk_lr_factor}]
    return out


def freeze_bn_stats(model: nn.Module) -> None:
    """The trunk's batch norms to eval mode (``train.bn_stats: frozen``): they normalise with the statistics they
    started with and stop updating them, while their scale and shift still train (detectron2 freezes both)."""
    for name, module in _unwrap(model).named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(HEAD_PREFIXES):
            module.eval()


def build_optimizer(model: nn.Module, optim_cfg: Any) -> torch.optim.Optimizer:
    """The optimiser named by ``optim_cfg.name`` with the config's hyper-parameters."""
    groups = param_groups(model, optim_cfg.weight_decay, lr=optim_cfg.lr, trunk_lr_factor=optim_cfg.trunk_lr_factor)
    eps = optim_cfg.eps
    if optim_cfg.name == "rmsprop_tf":
        return RMSpropTF(groups, lr=optim_cfg.lr, decay=optim_cfg.rms_decay, eps=1.0 if eps is None else eps,
                         momentum=optim_cfg.momentum)
    if optim_cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=optim_cfg.lr, momentum=optim_cfg.momentum,
                               nesterov=optim_cfg.nesterov and optim_cfg.momentum > 0)
    if optim_cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=(optim_cfg.momentum, optim_cfg.beta2),
                                 eps=1e-8 if eps is None else eps)
    raise ValueError(f"unknown optimizer {optim_cfg.name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, sched_cfg: Any, *, steps_per_epoch: int,
                    epochs: int) -> EpochLR:
    """The config's schedule as an :class:`EpochLR` stepped once per optimiser step."""
    return EpochLR(optimizer, name=sched_cfg.name, steps_per_epoch=steps_per_epoch, epochs=epochs,
                   decay_rate=sched_cfg.decay_rate, decay_epochs=sched_cfg.decay_epochs,
                   warmup_epochs=sched_cfg.warmup_epochs, warmup_start=sched_cfg.warmup_start,
                   min_lr_factor=sched_cfg.min_lr_factor)


def inception_loss(outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor, *,
                   label_smoothing: float = 0.1, aux_weight: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed cross-entropy (paper section 7: q' = (1 - eps) delta + eps / K) plus the weighted
    auxiliary loss. Returns ``(loss, main_logits)`` so callers need not unpack the tuple themselves."""
    logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    if aux is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(aux.float(), targets, label_smoothing=label_smoothing)
    return loss, logits


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float | None,
                   mode: str = "global") -> torch.Tensor | None:
    """Clip gradients at ``max_norm`` (paper section 8: 2.0); return the global norm before clipping.

    ``global`` clips the norm of all gradients together (torch's clip_grad_norm_); ``per_tensor`` clips each
    gradient by its own norm, which is what TF-slim's ``clip_gradient_norm`` does. The norm stays a tensor on
    the gradients' device: reading it here would wait for the device every step (the caller reads it with
    the loss, every ``train.log_every`` steps).
    """
    params = [p for p in params if p.grad is not None]
    if max_norm is None or not params:
        return None
    if mode == "global":
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params]
    norms = torch._foreach_norm(grads)
    torch._foreach_mul_(grads, [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms])  # clip_grad_norm_'s rule
    return torch.linalg.vector_norm(torch.stack(norms))
