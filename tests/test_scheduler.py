"""Step-based lr schedules: shapes, peaks, and state round trip."""
import math

import pytest
import torch

from speechllm.train.scheduler import SCHEDULERS, build_scheduler


def lrs(name, steps, base_lr=1.0, **conf):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_scheduler(name, opt, conf)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the lr the next update uses
        opt.step()
        sched.step()
    return out


def test_registry_names():
    assert set(SCHEDULERS) == {"warmuplr", "warmup_cosine", "warmup_linear", "constant"}


def test_warmuplr_is_noam_with_peak_at_warmup():
    out = lrs("warmuplr", 40, base_lr=2.0, warmup_steps=10)
    for n, lr in enumerate(out, start=1):
        assert lr == pytest.approx(2.0 * 10**0.5 * min(n**-0.5, n * 10**-1.5))
    assert max(out) == pytest.approx(2.0) and out.index(max(out)) == 9
    assert out[39] == pytest.approx(2.0 * (10 / 40) ** 0.5)


def test_warmup_cosine_warms_up_then_decays_to_min():
    out = lrs("warmup_cosine", 30, warmup_steps=5, total_steps=25, min_lr_ratio=0.1)
    assert out[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert out[14] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert out[24:] == pytest.approx([0.1] * 6)
    assert all(a >= b for a, b in zip(out[4:], out[5:]))


def test_warmup_linear_decays_linearly():
    out = lrs("warmup_linear", 12, warmup_steps=2, total_steps=10)
    assert out[:2] == pytest.approx([0.5, 1.0])
    assert out[5] == pytest.approx(1 - 4 / 8)
    assert out[9:] == pytest.approx([0.0, 0.0, 0.0])


def test_constant_with_optional_warmup():
    assert lrs("constant", 4, base_lr=0.3) == pytest.approx([0.3] * 4)
    assert lrs("constant", 4, base_lr=0.3, warmup_steps=2) == pytest.approx([0.15, 0.3, 0.3, 0.3])


def test_total_steps_filled_in_when_missing():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler("warmup_cosine", opt, {"warmup_steps": 2}, total_steps=50)
    assert sched.total_steps == 50


def test_unknown_scheduler_names_choices():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmuplr"):
        build_scheduler("noam2", opt, {})


def test_state_dict_round_trip_continues_schedule():
    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, build_scheduler("warmuplr", opt, {"warmup_steps": 5})

    opt, sched = make()
    for _ in range(7):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
