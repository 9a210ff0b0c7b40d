"""Recipe pieces against values computed by hand (paper sections 7, 8, 10)."""
import math

import pytest
import torch
from torch import nn

from lowres.config import OptimConfig, ScheduleConfig
from lowres.training.recipe import (EpochLR, ModelEma, RMSpropTF, build_optimizer, build_scheduler, clip_gradients,
                                    inception_loss, param_groups)


def _one_param(value: float = 1.0) -> nn.Parameter:
    return nn.Parameter(torch.tensor([value], dtype=torch.float64))


def test_rmsprop_tf_two_steps_by_hand():
    p = _one_param(1.0)
    opt = RMSpropTF([p], lr=0.1, decay=0.9, eps=1.0, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        (2.0 * p).sum().backward()  # gradient 2.0 every step
        opt.step()
    # step 1: ms = 0.9 * 1 + 0.1 * 4 = 1.3 (ms starts at ONE); mom = 0.1 * 2 / sqrt(1.3 + 1.0)
    mom1 = 0.1 * 2 / math.sqrt(2.3)
    # step 2: ms = 0.9 * 1.3 + 0.4 = 1.57; mom = 0.9 * mom1 + 0.1 * 2 / sqrt(2.57)
    mom2 = 0.9 * mom1 + 0.1 * 2 / math.sqrt(2.57)
    assert p.item() == pytest.approx(1.0 - mom1 - mom2, abs=1e-12)
    assert opt.state[p]["square_avg"].item() == pytest.approx(1.57, abs=1e-12)


def test_rmsprop_tf_weight_decay_and_difference_from_torch():
    p = _one_param(3.0)
    opt = RMSpropTF([p], lr=0.01, decay=0.9, eps=1.0, momentum=0.0, weight_decay=0.5)
    p.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step()
    g = 1.0 + 0.5 * 3.0  # L2 gradient added, as TF-slim's regulariser does
    assert p.item() == pytest.approx(3.0 - 0.01 * g / math.sqrt(0.9 + 0.1 * g * g + 1.0), abs=1e-12)
    q = _one_param(3.0)
    torch_opt = torch.optim.RMSprop([q], lr=0.01, alpha=0.9, eps=1.0, weight_decay=0.5)
    q.grad = torch.tensor([1.0], dtype=torch.float64)
    torch_opt.step()  # eps outside the sqrt and ms from zero: a different step
    assert abs(q.item() - p.item()) > 1e-4


def test_step_schedule_paper_values():
    opt = torch.optim.SGD([_one_param()], lr=0.045)
    sched = EpochLR(opt, name="step", steps_per_epoch=10, epochs=100, decay_rate=0.94, decay_epochs=2.0)
    lrs = []
    for _ in range(45):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == lrs[19] == pytest.approx(0.045)
    assert lrs[20] == lrs[39] == pytest.approx(0.045 * 0.94)
    assert lrs[40] == pytest.approx(0.045 * 0.94 ** 2)


def test_warmup_and_cosine():
    opt = torch.optim.SGD([_one_param()], lr=1.0)
    sched = EpochLR(opt, name="cosine", steps_per_epoch=10, epochs=11, warmup_epochs=1.0, warmup_start=0.1,
                    min_lr_factor=0.0)
    assert sched.factor(0) == pytest.approx(0.1)
    assert sched.factor(5) == pytest.approx(0.55)  # half-way through the warm-up
    assert sched.factor(10) == pytest.approx(1.0)
    assert sched.factor(60) == pytest.approx(0.5)  # half-way through the cosine
    assert sched.factor(110) == pytest.approx(0.0, abs=1e-12)


def test_scheduler_state_roundtrip_and_mismatch():
    opt = torch.optim.SGD([_one_param()], lr=0.045)
    sched = build_scheduler(opt, ScheduleConfig(), steps_per_epoch=10, epochs=10)
    for _ in range(25):
        sched.step()
    opt2 = torch.optim.SGD([_one_param()], lr=0.045)
    sched2 = build_scheduler(opt2, ScheduleConfig(), steps_per_epoch=10, epochs=10)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.045 * 0.94)
    sched3 = build_scheduler(opt2, ScheduleConfig(), steps_per_epoch=7, epochs=10)
    with pytest.raises(ValueError, match="steps per epoch"):
        sched3.load_state_dict(sched.state_dict())


def test_label_smoothed_loss_with_aux_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    aux = torch.zeros(1, 3)
    target = torch.tensor([0])
    loss, main = inception_loss((logits, aux), target, label_smoothing=0.1, aux_weight=0.4)
    lse = math.log(math.exp(2.0) + 2.0)
    q0 = 0.9 + 0.1 / 3  # q' = (1 - eps) delta + eps / K (paper section 7)
    main_loss = lse - 2.0 * q0  # -sum_k q'_k (z_k - lse)
    assert loss.item() == pytest.approx(main_loss + 0.4 * math.log(3.0), abs=1e-6)
    assert main is logits
    plain, _ = inception_loss(logits, target, label_smoothing=0.0)
    assert plain.item() == pytest.approx(lse - 2.0, abs=1e-6)


def test_ema_warmup_and_buffers():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    nn.init.constant_(model[0].weight, 0.0)
    ema = ModelEma(model, decay=0.9999)
    model[0].weight.data.fill_(1.0)
    model[1].running_mean.fill_(2.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # decay min(0.9999, 1/10) = 0.1
    assert ema.module[0].weight.item() == pytest.approx(0.9)
    assert ema.module[1].running_mean.item() == pytest.approx(1.8)  # buffers are averaged too
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers copied
    ema.update(model)  # decay 2/11
    assert ema.module[0].weight.item() == pytest.approx(0.9 * 2 / 11 + 9 / 11)
    ema2 = ModelEma(model, decay=0.9999)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.num_updates == 2 and ema2.module[0].weight.item() == ema.module[0].weight.item()


def test_clipping_global_and_per_tensor():
    a, b = _one_param(), _one_param()
    a.grad, b.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    assert float(clip_gradients([a, b], 2.0)) == pytest.approx(5.0)
    assert a.grad.item() == pytest.approx(3.0 * 2.0 / 5.0, rel=1e-5)
    a.grad, b.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    clip_gradients([a, b], 2.0, "per_tensor")
    assert a.grad.item() == pytest.approx(2.0, rel=1e-5) and b.grad.item() == pytest.approx(1.0)


@pytest.mark.parametrize("name,cls", [("rmsprop_tf", RMSpropTF), ("sgd", torch.optim.SGD),
                                      ("adamw", torch.optim.AdamW)])
def test_build_optimizer_no_decay_on_bn_and_bias(name, cls):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, OptimConfig(name=name, weight_decay=1e-4))
    assert isinstance(opt, cls)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3
    if name == "adamw":
        assert opt.param_groups[0]["eps"] == 1e-8  # eps None -> the optimiser's own default
    if name == "rmsprop_tf":
        assert opt.param_groups[0]["eps"] == 1.0
    assert len(param_groups(model, 0.1)) == 2


def _model_and_grads(seed: int):
    from lowres import build_model

    torch.manual_seed(seed)
    model = build_model(79, num_classes=5, width=0.1, min_depth=4)
    extra = nn.Parameter(torch.randn(3, dtype=torch.float64))  # another dtype: its own multi-tensor group
    no_grad = nn.Parameter(torch.randn(2))  # never gets a gradient: skipped, no state
    return model, extra, no_grad


@pytest.mark.parametrize("weight_decay", [0.0, 4e-5])
def test_rmsprop_tf_multi_tensor_equals_the_per_parameter_loop(weight_decay):
    """The foreach path against the per-tensor reference, bit for bit, over steps with changing lr."""
    runs = []
    for foreach in (False, True):
        model, extra, no_grad = _model_and_grads(0)
        groups = [*param_groups(model, weight_decay), {"params": [extra, no_grad], "weight_decay": weight_decay}]
        opt = RMSpropTF(groups, lr=0.045, foreach=foreach)
        gen = torch.Generator().manual_seed(1)
        for step in range(4):
            for p in [*model.parameters(), extra]:
                p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            for g in opt.param_groups:
                g["lr"] = 0.045 * 0.94 ** step
            opt.step()
        runs.append(([p.detach().clone() for p in [*model.parameters(), extra, no_grad]], opt.state_dict()))
    (p0, s0), (p1, s1) = runs
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert s0["state"].keys() == s1["state"].keys()
    for k in s0["state"]:
        assert all(torch.equal(s0["state"][k][name], s1["state"][k][name]) for name in s0["state"][k])


def test_ema_multi_tensor_equals_the_per_tensor_loop():
    model, _, _ = _model_and_grads(0)
    emas = [ModelEma(model, decay=0.99, foreach=f) for f in (False, True)]
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 79, 79))  # moves BN statistics and num_batches_tracked
        for ema in emas:
            ema.update(model)
    a, b = (e.module.state_dict() for e in emas)
    assert all(torch.equal(a[k], b[k]) for k in a) and b["Conv2d_1a_3x3.bn.num_batches_tracked"].item() == 5


def test_default_path_is_the_loop_on_cpu_and_multi_tensor_on_cuda(monkeypatch):
    """torch's own rule: per-tensor on the CPU (cache-friendly), multi-tensor on CUDA (few dispatches)."""
    from lowres.training import recipe

    calls = []
    monkeypatch.setattr(recipe, "_rmsprop_tf_foreach", lambda *a: calls.append("foreach"))
    monkeypatch.setattr(recipe, "_rmsprop_tf_single", lambda *a: calls.append("loop"))
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    RMSpropTF([p]).step()
    RMSpropTF([p], foreach=True).step()
    assert calls == ["loop", "foreach"]
    assert recipe._use_foreach(None, torch.empty(0, device="meta")) is False  # only CUDA tensors choose foreach


def test_trunk_lr_factor_gives_the_trunk_its_own_rate_and_the_schedule_scales_both():
    from lowres.models import build_model

    model = build_model(79, 5, width=0.125, min_depth=8)
    cfg = OptimConfig(name="adamw", lr=1e-3, trunk_lr_factor=0.1)
    opt = build_optimizer(model, cfg)
    head = {id(p) for n, p in model.named_parameters() if n.startswith(("fc.", "AuxLogits."))}
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert {id(p) for g in opt.param_groups[:2] for p in g["params"]} == head
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = build_scheduler(opt, ScheduleConfig(name="cosine"), steps_per_epoch=10, epochs=1)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[2]["lr"] == pytest.approx(0.1 * opt.param_groups[0]["lr"])
    assert len(build_optimizer(model, OptimConfig(name="adamw")).param_groups) == 2  # factor 1: the groups of before


def test_frozen_bn_stats_keep_the_statistics_but_train_scale_and_shift():
    from lowres.config import Config
    from lowres.models import build_model
    from lowres.training.engine import StepRecipe, train_one_epoch

    torch.manual_seed(0)
    model = build_model(79, 4, width=0.125, min_depth=8, aux_logits=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = Config.from_dict({"train": {"bn_stats": "frozen"}})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = EpochLR(opt, name="constant", steps_per_epoch=2, epochs=1)
    batches = [(torch.randint(0, 256, (4, 3, 79, 79), dtype=torch.uint8), torch.tensor([0, 1, 2, 3]),
                torch.arange(4))] * 2
    train_one_epoch(model, batches, opt, sched, StepRecipe.from_config(cfg), device=torch.device("cpu"), steps=2)
    after = model.state_dict()
    assert torch.equal(after["Mixed_6b.branch1x1.bn.running_mean"], before["Mixed_6b.branch1x1.bn.running_mean"])
    assert torch.equal(after["Conv2d_1a_3x3.bn.running_var"], before["Conv2d_1a_3x3.bn.running_var"])
    assert not torch.equal(after["Mixed_6b.branch1x1.bn.weight"], before["Mixed_6b.branch1x1.bn.weight"])
    running = build_model(79, 4, width=0.125, min_depth=8, aux_logits=False)
    running.load_state_dict(before)
    opt = torch.optim.SGD(running.parameters(), lr=0.1)
    sched = EpochLR(opt, name="constant", steps_per_epoch=2, epochs=1)
    train_one_epoch(running, batches, opt, sched, StepRecipe.from_config(Config()), device=torch.device("cpu"),
                    steps=2)
    assert not torch.equal(running.state_dict()["Conv2d_1a_3x3.bn.running_var"], before["Conv2d_1a_3x3.bn.running_var"])
