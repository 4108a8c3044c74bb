"""The `paper` optimizer setting is Algorithm 1's update exactly: plain SGD, momentum 0."""

import pytest
import torch
import torch.nn.functional as F

from dat.config import resolve
from dat.data import load_dataset
from dat.train import build_run, plain_step


def test_paper_setting_forces_momentum_zero_and_refuses_a_contradiction():
    assert resolve("digits", optimizer="paper").momentum == 0.0
    assert resolve("cifar10-cnn6", optimizer="paper").momentum == 0.0
    assert resolve("digits").momentum == 0.9 and resolve("digits").optimizer == "project"
    with pytest.raises(ValueError, match="expected momentum 0"):
        resolve("digits", optimizer="paper", momentum=0.5)
    with pytest.raises(ValueError, match="optimizer"):
        resolve("digits", optimizer="adam")


def test_two_paper_steps_are_w_minus_lr_times_the_gradient():
    # Two steps: with momentum the second step would differ (it adds 0.9 x the first one's buffer).
    config = resolve("digits", method="sgd", optimizer="paper", width=4, hidden=8, weight_decay=0.0)
    bundle = load_dataset("digits")
    run = build_run(config, bundle, torch.device("cpu"))
    model, optimizer = run.model, run.optimizer
    x, y = bundle.train.tensors[0][:32], bundle.train.tensors[1][:32]
    for _ in range(2):
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        plain_step(model, optimizer, x, y)
        for (name, p), g in zip(model.named_parameters(), grads):
            assert torch.allclose(p, params[name] - config.lr * g, atol=1e-7), name
