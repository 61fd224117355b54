"""Passthrough encoder for features dumped by ``dump_encoder_features`` (``encoder: precomputed``).

The heavy encoder ran once, offline (stage 3b); training reads its ``[T, D]`` output from
``feats.scp`` and only needs what sits on top. This module optionally stacks ``downsample``
consecutive frames (``[T, D] -> [ceil(T / k), k * D]``, no information lost, fewer frames for
the attention decoder) and projects them to ``output_size`` with one linear layer.

    encoder: precomputed
    encoder_conf: {downsample: 2, output_size: 256, input_frame_rate: 50}
    input: dumped
    input_size: 1024            # dump_info.yaml: dim
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrecomputedEncoder(nn.Module):
    """``forward(x[B, T, input_size], lengths) -> (out[B, ceil(T/k), output_size], out_lengths)``.

    Args:
        input_size: dimension of the dumped features (``dim`` in ``dump_info.yaml``).
        output_size: project to this dimension with a linear layer; None keeps ``k * input_size``.
        downsample: ``k``, frames stacked into one (1 = none). A last partial group is padded
            with zeros, so an utterance of ``T`` frames gives ``ceil(T / k)``.
        input_frame_rate: frames per second of the dumped features (``frame_rate`` in
            ``dump_info.yaml``; 50 for HuBERT/wav2vec2/WavLM/Whisper encoders).
        dropout_rate: dropout on the (stacked) input features, in training only.
    """

    input_kind = "fbank"  # features [B, T, D], like fbank: read from feats.scp, not audio

    def __init__(
        self,
        input_size: int,
        output_size: int | None = None,
        downsample: int = 1,
        input_frame_rate: float = 50.0,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        self.input_size = input_size
        self.downsample = int(downsample)
        self.input_frame_rate = float(input_frame_rate)
        stacked = input_size * self.downsample
        self.dropout = nn.Dropout(dropout_rate)
        self.proj = nn.Linear(stacked, output_size) if output_size is not None else None
        self._output_size = output_size if output_size is not None else stacked

    def output_size(self) -> int:
        """Dimension of the encoder output."""
        return self._output_size

    def frame_rate(self) -> float:
        """Output frames per second."""
        return self.input_frame_rate / self.downsample

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for ``lengths`` input frames, without running the encoder."""
        return torch.div(lengths + self.downsample - 1, self.downsample, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack, project; padded output frames are zero."""
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(f"precomputed encoder expects features [B, T, {self.input_size}], got {list(x.shape)}")
        k = self.downsample
        if k > 1:
            x = F.pad(x, (0, 0, 0, (-x.size(1)) % k))  # whole groups of k frames
            x = x.reshape(x.size(0), x.size(1) // k, k * x.size(2))
            lengths = self.output_lengths(lengths)
        x = self.dropout(x)
        if self.proj is not None:
            x = self.proj(x)
        valid = torch.arange(x.size(1), device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        return x * valid.unsqueeze(-1).to(x.dtype), lengths

    def hidden_states(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The one "layer" there is: ``([forward output], out_lengths)``, for the encoder contract."""
        out, out_lens = self.forward(x, lengths)
        return [out], out_lens
