"""The distillation loss against values computed by hand."""

import math

import pytest
import torch

from sead.distill import kd_loss
from tests.helpers import settings


def test_kd_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 0.0]])
    targets = torch.tensor([[0.8, 0.2]])
    labels = torch.tensor([0])
    T, alpha = 2.0, 0.7
    # student at T: softmax([0.5, 0]) = [e^.5, 1] / (e^.5 + 1)
    z = math.exp(0.5) + 1
    ps = [math.exp(0.5) / z, 1 / z]
    kl = 0.8 * math.log(0.8 / ps[0]) + 0.2 * math.log(0.2 / ps[1])
    ce = -math.log(math.e / (math.e + 1))
    expected = alpha * T**2 * kl + (1 - alpha) * ce
    assert kd_loss(student, targets, labels, T, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_alpha_selects_the_terms():
    student = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    targets = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    labels = torch.tensor([1, 1])
    hard = torch.nn.functional.cross_entropy(student, labels)
    assert kd_loss(student, targets, labels, 3.0, 0.0).item() == pytest.approx(hard.item())
    # KD term is zero when the student already matches the targets at T
    matched = torch.log(targets) * 3.0
    assert kd_loss(matched, targets, labels, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_regression_mixes_mse_to_ensemble_and_to_gold():
    student = torch.tensor([[1.0], [3.0]])
    ensemble = torch.tensor([[2.0], [3.0]])
    gold = torch.tensor([1.0, 5.0])
    # MSE to ensemble: (1 + 0) / 2 = 0.5; MSE to gold: (0 + 4) / 2 = 2
    loss = kd_loss(student, ensemble, gold, temperature=4.0, alpha=0.25, regression=True)
    assert loss.item() == pytest.approx(0.25 * 0.5 + 0.75 * 2.0)


def test_fp16_without_a_gpu_is_said_before_any_work(monkeypatch, caplog):
    import logging
    from dataclasses import replace

    from sead import distill
    from tests.helpers import settings as group_settings

    train = group_settings("train")
    monkeypatch.setattr(distill.torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        distill.check_precision(replace(train, fp16=True))
        distill.check_precision(train)
    assert caplog.text.count("train.fp16=true needs a CUDA GPU") == 1


def test_every_allowed_scheduler_runs_with_what_the_student_trainer_gives_it():
    """train.lr_scheduler allows only schedulers that need neither an eval strategy nor
    lr_scheduler_kwargs: each builds from an optimizer and step counts alone."""
    from transformers import get_scheduler

    from sead.distill import SCHEDULERS

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for name in SCHEDULERS:
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10)
        optimizer.step()
        scheduler.step()
    for refused in ("reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay"):
        with pytest.raises(ValueError, match=rf"train.lr_scheduler='{refused}' is not allowed"):
            settings("train", lr_scheduler=refused)
