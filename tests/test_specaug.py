"""SpecAugment: masks only in train mode, only inside each utterance's valid frames."""
from __future__ import annotations

import math

import pytest
import torch

from speechllm.features.fbank import compute_fbank
from speechllm.features.specaug import SpecAugment, mel_warp


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


def test_mel_warp_identity_at_alpha_one():
    x, _ = batch(lengths=(30, 30))
    y = mel_warp(x, torch.ones(2), sample_rate=16000)
    assert torch.allclose(y, x, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.9, 1.12])
def test_mel_warp_moves_a_tone_like_a_scaled_frequency(alpha):
    # the fbank of a 1 kHz tone, warped by alpha, peaks where the fbank of an alpha kHz tone does
    t = torch.arange(16000) / 16000
    tone = lambda hz: compute_fbank(0.5 * torch.sin(2 * math.pi * hz * t), 16000)
    warped = mel_warp(tone(1000.0)[None], torch.tensor([alpha]))[0]
    assert int(warped.mean(0).argmax()) == int(tone(1000.0 * alpha).mean(0).argmax())
    assert int(warped.mean(0).argmax()) != int(tone(1000.0).mean(0).argmax())


def test_freq_warp_changes_values_keeps_padding_and_is_off_in_eval():
    torch.manual_seed(0)
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, freq_warp=0.1).train()
    x, lengths = batch()
    y = aug(x, lengths)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert torch.equal(y[1, 60:], x[1, 60:])  # padding frames (zeros) stay zeros
    assert aug.eval()(x, lengths) is x
    with pytest.raises(ValueError, match="freq_warp"):
        SpecAugment(freq_warp=-0.1)
