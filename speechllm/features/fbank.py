"""Log mel filterbank features, Kaldi-compatible, via ``torchaudio.compliance.kaldi.fbank``."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

# Kaldi reads 16-bit PCM as raw integer values (-32768..32767) and never rescales them;
# soundfile gives floats in [-1, 1]. Multiplying by 2**15 reproduces Kaldi's numbers
# exactly (log energies offset by log(2**30) otherwise), so features, dither and energy
# floors mean the same as in Kaldi recipes and Kaldi-made feats.scp files stay comparable.
INT16_SCALE = 32768.0


def compute_fbank(
    wave: np.ndarray | torch.Tensor,
    sr: int,
    num_mel_bins: int = 80,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    dither: float = 0.0,
    **kaldi_options,
) -> torch.Tensor:
    """Kaldi fbank of one mono waveform.

    Args:
        wave: samples in [-1, 1], shape ``[T]`` (as returned by ``load_audio``).
        sr: sample rate in Hz.
        num_mel_bins, frame_length (ms), frame_shift (ms), dither: as in Kaldi's
            ``compute-fbank-feats``; dither defaults to 0 so features are reproducible.
        **kaldi_options: any other ``torchaudio.compliance.kaldi.fbank`` option.

    Returns:
        FloatTensor ``[num_frames, num_mel_bins]`` (``snip_edges`` framing, as in Kaldi).

    Raises:
        ValueError: if the wave is not 1-D or shorter than one frame.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.dim() != 1:
        raise ValueError(f"compute_fbank expects a 1-D wave, got shape {tuple(x.shape)}")
    frame_samples = int(sr * frame_length / 1000)
    if x.numel() < frame_samples:
        raise ValueError(f"audio too short: {x.numel()} samples < one {frame_length:g} ms frame ({frame_samples} samples)")
    # Kaldi's energy floor default is 0 (torchaudio's is 1.0); it only matters with use_energy
    options = {"energy_floor": 0.0, **kaldi_options}
    return kaldi.fbank(
        x.unsqueeze(0) * INT16_SCALE,
        sample_frequency=sr,
        num_mel_bins=num_mel_bins,
        frame_length=frame_length,
        frame_shift=frame_shift,
        dither=dither,
        **options,
    )
