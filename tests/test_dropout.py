"""PackedDropout: the statistics, gradients and eval behavior of nn.Dropout; the Trainer's swap."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speechllm.nets.dropout import PackedDropout, apply_dropout_impl, packed_dropout, use_packed_dropout
from speechllm.train.trainer import resolve_config
from speechllm.utils.config import ConfigError


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drop_rate_and_scale(p: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    n = 400_000
    x = torch.ones(n, dtype=dtype)
    y = packed_dropout(x, p)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # every kept element is scaled by exactly 1/(1-p) (to the dtype's precision)
    assert torch.allclose(y[kept].float(), torch.full((int(kept.sum()),), 1 / (1 - p)), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    # drop rate within 5 binomial standard deviations of p
    rate = 1 - kept.float().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_masks_independent_of_position() -> None:
    # each 16-bit slice of a 64-bit word decides one element: the four slice positions must all
    # drop at rate p (a broken slicing would leave some positions never or always dropped)
    torch.manual_seed(1)
    y = packed_dropout(torch.ones(100_000, 4), 0.25)
    rates = (y == 0).float().mean(0)
    assert torch.all((rates - 0.25).abs() < 0.01), rates
    # neighbours are not correlated
    a, b = (y[:, 0] == 0).float(), (y[:, 1] == 0).float()
    assert abs(((a - a.mean()) * (b - b.mean())).mean().item()) < 0.005


def test_non_contiguous_odd_size_and_gradient() -> None:
    torch.manual_seed(2)
    x = torch.randn(7, 13, 5).transpose(0, 2).requires_grad_(True)  # 455 elements, not a multiple of 4
    y = packed_dropout(x, 0.2)
    y.sum().backward()
    mask = (y != 0).float()
    assert torch.allclose(x.grad, mask / 0.8)
    assert torch.allclose(y, x.detach() * mask / 0.8)


def test_module_modes_and_fresh_masks() -> None:
    torch.manual_seed(3)
    d = PackedDropout(0.5)
    x = torch.randn(64, 64)
    assert not torch.equal(d(x), d(x))  # a new mask each call
    d.eval()
    assert d(x) is x
    assert PackedDropout(0.0)(x) is x
    assert torch.equal(PackedDropout(1.0)(x), torch.zeros_like(x))
    with pytest.raises(ValueError):
        PackedDropout(1.5)
    with pytest.raises(ValueError):
        packed_dropout(x, 1.0)


def test_use_packed_dropout_swaps_only_dropout_layers() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Sequential(nn.ReLU(), nn.Dropout(0.3)), nn.Dropout2d(0.2))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 8, 1, 1).squeeze(-1).squeeze(-1)
    before = model[:3](x)
    assert use_packed_dropout(model) == 2
    assert isinstance(model[1], PackedDropout) and model[1].p == 0.1 and not model[1].training
    assert isinstance(model[2][1], PackedDropout) and model[2][1].p == 0.3
    assert type(model[3]) is nn.Dropout2d  # other semantics: left alone
    assert model.state_dict().keys() == state.keys()
    assert torch.equal(model[:3](x), before)  # eval: the same function


def test_trainer_dropout_impl_rule() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # the rule only: a CPU model stands in for a CUDA one (nothing is moved)
    assert apply_dropout_impl(nn.Sequential(nn.Dropout(0.1)), "auto", cpu) == 1
    assert apply_dropout_impl(nn.Sequential(nn.Dropout(0.1)), "auto", cuda) == 0
    assert apply_dropout_impl(nn.Sequential(nn.Dropout(0.1)), "packed", cuda) == 1
    assert apply_dropout_impl(nn.Sequential(nn.Dropout(0.1)), "native", cpu) == 0
    with pytest.raises(ValueError, match="dropout_impl"):
        apply_dropout_impl(nn.Sequential(), "fast", cpu)
    assert resolve_config({})["dropout_impl"] == "auto"
    with pytest.raises(ConfigError, match="dropout_impl"):
        resolve_config({"dropout_impl": "fast"})


@pytest.mark.parametrize("impl, packed", [("auto", True), ("packed", True), ("native", False)])
def test_trainer_applies_dropout_impl_on_the_cpu(tmp_path, impl: str, packed: bool) -> None:
    from speechllm.train import Trainer
    from trainer_toys import ToyDataset, ToyModel, collate_toy, toy_config

    trainer = Trainer(ToyModel(), toy_config(max_epoch=1, dropout_impl=impl), tmp_path,
                      ToyDataset(8), ToyDataset(4, seed=1), collate_toy)
    assert isinstance(trainer.model.drop, PackedDropout) is packed
    assert type(trainer.model.drop) is (PackedDropout if packed else nn.Dropout)
    trainer.run()  # and it trains
    assert (tmp_path / "checkpoints/last.pt").is_file()
