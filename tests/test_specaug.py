"""SpecAugment: masks only in train mode, only inside each utterance's valid frames."""
from __future__ import annotations

import pytest
import torch

from speechllm.features.specaug import SpecAugment


def batch(lengths=(100, 60), dim=40) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor(lengths)
    x = torch.rand(len(lengths), int(lengths.max()), dim) + 1.0  # all > 0 so masks (0) are visible
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, lengths


def test_eval_mode_is_identity():
    aug = SpecAugment().eval()
    x, lengths = batch()
    assert aug(x, lengths) is x


def test_train_mode_masks_without_changing_input():
    torch.manual_seed(0)
    aug = SpecAugment(num_freq_masks=2, max_freq_width=10, num_time_masks=2, max_time_width=20).train()
    x, lengths = batch()
    before = x.clone()
    y = aug(x, lengths)
    assert torch.equal(x, before)
    assert (y == 0).sum() > (x == 0).sum()


def test_freq_masks_cover_whole_bins_within_max_width():
    torch.manual_seed(1)
    aug = SpecAugment(num_freq_masks=1, max_freq_width=8, num_time_masks=0).train()
    x, lengths = batch(lengths=(50, 50))
    for _ in range(20):
        y = aug(x, lengths)
        masked_bins = (y == 0).all(dim=1)  # [B, D]
        assert ((y == 0).any(dim=1) == masked_bins).all()  # a bin is masked in every frame or none
        assert (masked_bins.sum(dim=1) <= 8).all()


def test_time_masks_stay_inside_valid_length_and_padding_untouched():
    torch.manual_seed(2)
    aug = SpecAugment(num_freq_masks=0, num_time_masks=3, max_time_width=None, max_time_ratio=0.2).train()
    x, lengths = batch(lengths=(100, 30))
    for _ in range(20):
        y = aug(x, lengths)
        assert torch.equal(y[1, 30:], x[1, 30:])
        masked = (y == 0).all(dim=2)  # [B, T] frames fully masked
        # each of 3 masks is at most 20% of the length: at most 60 of 100, 18 of 30 frames
        assert masked[0].sum() <= 60 and masked[1, :30].sum() <= 18


def test_time_warp_keeps_length_and_padding():
    torch.manual_seed(3)
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=5).train()
    x, lengths = batch(lengths=(80, 40))
    y = aug(x, lengths)
    assert y.shape == x.shape and torch.equal(y[1, 40:], x[1, 40:])
    assert not torch.equal(y, x)


def test_time_masks_need_a_width_bound():
    with pytest.raises(ValueError, match="max_time_width or max_time_ratio"):
        SpecAugment(max_time_width=None, max_time_ratio=None)
