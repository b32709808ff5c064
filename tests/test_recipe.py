"""Fine-tuning recipes: optimiser groups, the learning-rate schedule, the distillation loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from graftsearch import ParameterError
from graftsearch.training._recipe import (PAPER, STANDARD, Recipe, check_distillation,
                                          distillation_loss, lr_factor, make_optimizer,
                                          make_scheduler, recipe)


def test_distillation_loss_equals_hand_computation():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    teacher = torch.tensor([[1.0, 1.5, -0.5], [3.0, -1.0, 0.0]])
    target = torch.tensor([0, 2])
    t, alpha = 2.0, 0.25

    def log_softmax(row):
        m = max(row)
        z = sum(math.exp(v - m) for v in row)
        return [v - m - math.log(z) for v in row]

    hard = 0.0
    soft = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist()):
        hard += -log_softmax(s_row)[y]
        ls = log_softmax([v / t for v in s_row])
        lt = log_softmax([v / t for v in t_row])
        soft += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    expected = (1 - alpha) * hard / 2 + alpha * t * t * soft / 2
    got = distillation_loss(student, teacher, target, temperature=t, alpha=alpha)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_distillation_with_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(distillation_loss(student, teacher, y, temperature=3, alpha=0.0),
                       F.cross_entropy(student, y))
    distillation_loss(student, teacher, y, temperature=3, alpha=0.5).backward()
    assert teacher.grad is None and student.grad is not None


def test_identical_logits_leave_only_the_hard_term():
    z = torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    got = distillation_loss(z, z.clone(), y, temperature=4.0, alpha=0.5)
    assert float(got) == pytest.approx(0.5 * float(F.cross_entropy(z, y)), abs=1e-6)


def test_head_parameters_get_the_scaled_rate_and_norms_no_decay():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    opt = make_optimizer(net, STANDARD, head_prefixes=["3"])
    seen = {}
    for group in opt.param_groups:
        for p in group["params"]:
            seen[id(p)] = (group["lr"], group["weight_decay"])
    assert id(net[0].weight) not in seen  # frozen
    assert seen[id(net[3].weight)] == (STANDARD.lr * STANDARD.head_lr_scale, STANDARD.weight_decay)
    assert seen[id(net[3].bias)] == (STANDARD.lr * STANDARD.head_lr_scale, 0.0)
    assert seen[id(net[1].weight)] == (STANDARD.lr, 0.0)
    assert seen[id(net[0].bias)] == (STANDARD.lr, 0.0)
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(make_optimizer(net, PAPER), torch.optim.Adam)


def test_warmup_then_cosine_reaches_zero_and_paper_is_constant():
    f = lr_factor(STANDARD, 100)
    warm = int(round(STANDARD.warmup * 100))
    assert f(0) == pytest.approx(1 / warm)
    assert f(warm - 1) == pytest.approx(1.0)
    assert f(warm) == pytest.approx(1.0)
    assert f(99) < 0.01
    values = [f(s) for s in range(warm, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert all(lr_factor(PAPER, 100)(s) == 1.0 for s in range(100))
    net = nn.Linear(2, 2)
    opt = make_optimizer(net, STANDARD)
    sched = make_scheduler(opt, STANDARD, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(STANDARD.lr * 1.0)  # step 0 of 1 warm-up
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < STANDARD.lr * 0.05


def test_recipe_errors():
    with pytest.raises(ParameterError, match=r"'recipe' parameter must be one of \['standard', 'paper'\]"):
        recipe("fast")
    with pytest.raises(ParameterError, match=r"'warmup' parameter must be a float in \[0, 1\)"):
        Recipe(**{**STANDARD.as_dict(), "warmup": 1.5})
    with pytest.raises(ParameterError, match=r"'distill_alpha' parameter must be a float in \[0, 1\]"):
        check_distillation(2.0, 1.5)
    with pytest.raises(ParameterError, match=r"'distill_temperature' parameter must be a float > 0"):
        check_distillation(0, 0.5)
