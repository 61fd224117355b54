"""compute_fbank: Kaldi fbank via torchaudio on int16-scaled samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speechllm.data.audio import load_audio
from speechllm.features.fbank import INT16_SCALE, compute_fbank


def test_shape_follows_kaldi_snip_edges_framing(make_wav):
    wave, sr = load_audio(str(make_wav("a.wav", 1.0)))
    feats = compute_fbank(wave, sr)
    # snip_edges: 1 + (16000 - 400) // 160 frames
    assert feats.shape == (98, 80) and feats.dtype == torch.float32
    assert compute_fbank(wave, sr, num_mel_bins=40, frame_shift=20).shape == (49, 40)


def test_values_equal_direct_torchaudio_call_on_int16_range(make_wav):
    wave, sr = load_audio(str(make_wav("a.wav", 0.5)))
    direct = kaldi.fbank(
        torch.from_numpy(wave).unsqueeze(0) * 32768, sample_frequency=sr, num_mel_bins=80, dither=0.0, energy_floor=0.0
    )
    torch.testing.assert_close(compute_fbank(wave, sr), direct, rtol=0, atol=0)
    assert INT16_SCALE == 32768


def test_int16_scaling_shifts_log_energies_by_log_2_pow_30(make_wav):
    # why the scale matters: unscaled input gives features offset by log(32768^2), except
    # where tiny unscaled energies hit the float-epsilon floor of the log (never in Kaldi)
    wave, sr = load_audio(str(make_wav("a.wav", 0.5)))
    unscaled = kaldi.fbank(torch.from_numpy(wave).unsqueeze(0), sample_frequency=sr, num_mel_bins=80)
    offset = compute_fbank(wave, sr) - unscaled
    assert ((offset - 30 * np.log(2)).abs() < 1e-3).float().mean() > 0.99


def test_no_dither_is_deterministic_and_dither_is_not(make_wav):
    wave, sr = load_audio(str(make_wav("a.wav", 0.3)))
    assert torch.equal(compute_fbank(wave, sr), compute_fbank(wave, sr))
    assert not torch.equal(compute_fbank(wave, sr, dither=1.0), compute_fbank(wave, sr, dither=1.0))


def test_too_short_audio_is_a_value_error():
    with pytest.raises(ValueError, match=r"audio too short: 100 samples < one 25 ms frame \(400 samples\)"):
        compute_fbank(np.zeros(100, dtype=np.float32), 16000)
