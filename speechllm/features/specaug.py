"""SpecAugment (Park et al., 2019): time warp, frequency masks and time masks on [B, T, D],
plus an optional vocal-tract-length warp of the mel axis (VTLP, Jaitly & Hinton, 2013).

Active only in ``.train()`` mode. Everything stays inside each utterance's valid frames
(``lengths``), so padding is never touched and short utterances get proportionally short
masks when ``max_time_ratio`` is set. Randomness comes from torch's global generator, so
seeding torch makes it reproducible.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _kaldi_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_warp(x: torch.Tensor, alpha: torch.Tensor, sample_rate: int = 16000, low_freq: float = 20.0) -> torch.Tensor:
    """Warp log-mel features ``[B, T, D]`` as if each utterance's frequencies were scaled by
    ``alpha[b]`` (a speaker with a ``1/alpha`` times longer vocal tract): output bin ``i`` takes
    the value the input has at ``f_i / alpha``, linearly interpolated between bins, on the mel
    scale of Kaldi's fbank (``D`` bins equally spaced in mel from ``low_freq`` to Nyquist).
    Frequencies beyond the top bin repeat it, so ``alpha < 1`` never reads outside the band.
    """
    B, T, D = x.shape
    lo = _kaldi_mel(torch.tensor(float(low_freq)))
    hi = _kaldi_mel(torch.tensor(sample_rate / 2.0))
    centres_hz = 700.0 * torch.expm1((lo + (hi - lo) * torch.arange(1, D + 1) / (D + 1)) / 1127.0)
    src_mel = _kaldi_mel(centres_hz[None, :] / alpha.float().cpu()[:, None])  # [B, D]
    pos = ((src_mel - lo) / (hi - lo) * (D + 1) - 1).clamp(0, D - 1).to(x.device)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=D - 1)
    w = (pos - i0).to(x.dtype)[:, None, :]
    x0 = torch.gather(x, 2, i0[:, None, :].expand(B, T, D))
    x1 = torch.gather(x, 2, i1[:, None, :].expand(B, T, D))
    return x0 * (1 - w) + x1 * w


class SpecAugment(nn.Module):
    """Random masking (and optional time warping) of log-mel features.

    Args:
        num_freq_masks: frequency masks per utterance.
        max_freq_width: each frequency mask covers ``U{0..max_freq_width}`` bins.
        num_time_masks: time masks per utterance.
        max_time_width: upper bound in frames on a time mask's width (``None``: no bound).
        max_time_ratio: upper bound as a fraction of the utterance's length (``None``: none);
            with both bounds the smaller applies.
        time_warp: warp window ``W`` in frames; 0 disables warping.
        mask_value: value written into masked cells (0 = the mean after global CMVN).
        freq_warp: VTLP: each utterance's mel axis is warped by a factor drawn log-uniformly
            from ``[1/(1+freq_warp), 1+freq_warp]`` (see :func:`mel_warp`); 0 disables it.
            Imitates unseen speakers' formant positions (0.1 ~ +-1.7 semitones).
        sample_rate, low_freq: the fbank's mel band, for the warp.
    """

    # Augments the data, not weights: a speech LLM keeps it active in front of a frozen encoder
    # (speechllm.models.speech_llm._keep_frozen_in_eval).
    augments_input = True

    def __init__(
        self,
        num_freq_masks: int = 2,
        max_freq_width: int = 27,
        num_time_masks: int = 2,
        max_time_width: int | None = 40,
        max_time_ratio: float | None = None,
        time_warp: int = 0,
        mask_value: float = 0.0,
        freq_warp: float = 0.0,
        sample_rate: int = 16000,
        low_freq: float = 20.0,
    ):
        super().__init__()
        if num_time_masks > 0 and max_time_width is None and max_time_ratio is None:
            raise ValueError("SpecAugment: time masks need max_time_width or max_time_ratio")
        self.num_freq_masks = num_freq_masks
        self.max_freq_width = max_freq_width
        self.num_time_masks = num_time_masks
        self.max_time_width = max_time_width
        self.max_time_ratio = max_time_ratio
        self.time_warp = time_warp
        self.mask_value = mask_value
        if freq_warp < 0:
            raise ValueError(f"SpecAugment: freq_warp must be >= 0, got {freq_warp}")
        self.freq_warp = freq_warp
        self.sample_rate = sample_rate
        self.low_freq = low_freq

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Return an augmented copy of ``x`` ``[B, T, D]`` (``x`` itself in eval mode)."""
        if not self.training:
            return x
        B, T, D = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        x = x.clone()
        if self.freq_warp > 0:
            log_alpha = (torch.rand(B) * 2 - 1) * math.log1p(self.freq_warp)
            x = mel_warp(x, log_alpha.exp(), self.sample_rate, self.low_freq)
        if self.time_warp > 0:
            for b in range(B):
                x[b, : lengths[b]] = self._warp(x[b, : lengths[b]])
        mask = torch.zeros(B, T, D, dtype=torch.bool, device=x.device)
        if self.num_freq_masks > 0 and self.max_freq_width > 0:
            mask |= self._freq_mask(B, D, x.device).unsqueeze(1)
        if self.num_time_masks > 0:
            mask |= self._time_mask(lengths, T).unsqueeze(2)
        return x.masked_fill(mask, self.mask_value)

    def _spans(self, max_width: torch.Tensor, extent: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random ``(start, width)`` of ``num`` spans per row, each inside ``[0, extent)``."""
        shape = (max_width.shape[0], num)
        width = (torch.rand(shape, device=max_width.device) * (max_width[:, None] + 1)).long()
        width = torch.minimum(width, extent[:, None])
        start = (torch.rand(shape, device=max_width.device) * (extent[:, None] - width + 1)).long()
        return start, width

    def _freq_mask(self, B: int, D: int, device: torch.device) -> torch.Tensor:
        """``[B, D]`` bool: True on masked frequency bins."""
        max_w = torch.full((B,), min(self.max_freq_width, D), dtype=torch.long, device=device)
        start, width = self._spans(max_w, torch.full_like(max_w, D), self.num_freq_masks)
        pos = torch.arange(D, device=device)[None, None, :]
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    def _time_mask(self, lengths: torch.Tensor, T: int) -> torch.Tensor:
        """``[B, T]`` bool: True on masked frames, all inside each utterance's length."""
        max_w = lengths.clone()
        if self.max_time_width is not None:
            max_w = torch.clamp(max_w, max=self.max_time_width)
        if self.max_time_ratio is not None:
            max_w = torch.minimum(max_w, (lengths.float() * self.max_time_ratio).long())
        start, width = self._spans(max_w, lengths, self.num_time_masks)
        pos = torch.arange(T, device=lengths.device)[None, None, :]
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    def _warp(self, feats: torch.Tensor) -> torch.Tensor:
        """Warp one utterance ``[L, D]`` in time: the frame at a random centre moves by up to W."""
        L, W = feats.shape[0], self.time_warp
        if L <= 2 * W + 1:
            return feats
        center = int(torch.randint(W, L - W, (1,)))
        new_center = int(torch.randint(center - W, center + W + 1, (1,)))
        new_center = max(1, min(L - 1, new_center))
        if new_center == center:
            return feats
        # stretch [0, center) to new_center frames and [center, L) to the rest; linear interpolation
        left = F.interpolate(feats[:center].T[None], size=new_center, mode="linear", align_corners=False)
        right = F.interpolate(feats[center:].T[None], size=L - new_center, mode="linear", align_corners=False)
        return torch.cat([left, right], dim=2)[0].T

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.num_freq_masks}x{self.max_freq_width}, time_masks={self.num_time_masks}x"
            f"(width<={self.max_time_width}, ratio<={self.max_time_ratio}), time_warp={self.time_warp}, "
            f"freq_warp={self.freq_warp}"
        )
