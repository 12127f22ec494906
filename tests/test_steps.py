"""fcls.train.steps: the learning-rate schedule, weight EMA and optimizers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fcls.train.config import FAST, NOTEBOOK, Stage
from fcls.train.model import FinalCNNet
from fcls.train.steps import Ema, batch_bounds, learning_rate, make_optimizer


def test_onecycle_warms_up_linearly_then_follows_a_half_cosine_to_zero():
    stage = Stage("s", "sgd", lr=0.2, schedule="onecycle", warmup=0.1)
    total = 1000
    lrs = [learning_rate(stage, step, total) for step in range(total)]
    assert lrs[0] == pytest.approx(0.2 / 100) and lrs[99] == pytest.approx(0.2)
    assert all(b > a for a, b in itertools.pairwise(lrs[:100]))  # rising through the warm-up
    for step in (100, 325, 550, 999):
        done = (step - 100) / 900
        assert lrs[step] == pytest.approx(0.1 * (1 + math.cos(math.pi * done)))
    assert lrs[-1] < 1e-5 and learning_rate(stage, total + 5, total) == 0.0


def test_constant_schedule_is_the_stage_lr():
    stage = NOTEBOOK.stages[0]
    assert {learning_rate(stage, s, 10) for s in range(20)} == {stage.lr}


def test_ema_is_the_decayed_average_of_weights_and_statistics():
    torch.manual_seed(0)
    model = FinalCNNet()
    ema = Ema(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {k: v.double() for k, v in start.items() if v.dtype.is_floating_point}
    for n in range(1, 6):
        with torch.no_grad():
            for v in model.state_dict().values():
                if v.dtype.is_floating_point:
                    v.add_(torch.randn_like(v))
                else:
                    v.add_(1)
        ema.update(model)
        decay = min(0.9, (1 + n) / (10 + n))
        for k, v in model.state_dict().items():
            if k in expected:
                expected[k] = decay * expected[k] + (1 - decay) * v.double()
    got = ema.model.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
    assert got["conv1_bn.num_batches_tracked"] == model.conv1_bn.num_batches_tracked
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training


@pytest.mark.parametrize("stage", [*NOTEBOOK.stages, *FAST.stages, Stage("w", "adamw", 3e-3, 0.05)])
def test_optimizers_follow_the_stage(stage: Stage):
    opt = make_optimizer(stage, FinalCNNet())
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    assert type(opt) is kind[stage.optimizer]
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (stage.lr, stage.weight_decay)
    if stage.optimizer == "sgd":
        assert (group["momentum"], group["nesterov"]) == (stage.momentum, stage.nesterov)


def test_batch_bounds_drop_a_last_batch_of_one():
    assert batch_bounds(513, 256) == [(0, 256), (256, 512)]
    assert batch_bounds(514, 256) == [(0, 256), (256, 512), (512, 514)]
    assert batch_bounds(1, 256) == [(0, 1)]
