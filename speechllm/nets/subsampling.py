"""Convolutional front of the encoder: shortens the frame sequence by 4, 6 or 8.

Each conv2d runs with no padding, so output frame ``t`` only sees input frames
``[t*stride, t*stride + kernel)``. As a result every valid output frame depends on valid input
frames only (zero padding at the end of a batch never leaks in), and the output length of one
conv is ``(L - kernel) // stride + 1``.
"""
from __future__ import annotations

import torch
from torch import nn

# rate -> (kernel, stride) of each conv2d layer. The time and frequency axes use the same ones.
SUBSAMPLING_LAYOUTS: dict[int, list[tuple[int, int]]] = {
    4: [(3, 2), (3, 2)],
    6: [(3, 2), (5, 3)],
    8: [(3, 2), (3, 2), (3, 2)],
}


def _layout(rate: int) -> list[tuple[int, int]]:
    if rate not in SUBSAMPLING_LAYOUTS:
        raise ValueError(f"subsampling rate {rate} not supported; choose one of {sorted(SUBSAMPLING_LAYOUTS)}")
    return SUBSAMPLING_LAYOUTS[rate]


def min_input_length(rate: int) -> int:
    """Fewest input frames that give one output frame."""
    n = 1
    for kernel, stride in reversed(_layout(rate)):
        n = (n - 1) * stride + kernel
    return n


def subsampled_length(lengths: torch.Tensor | int, rate: int) -> torch.Tensor | int:
    """Number of output frames of :class:`Conv2dSubsampling` for ``lengths`` input frames.

    Applies ``L -> (L - kernel) // stride + 1`` per conv layer, e.g. for rate 4
    ``((L - 1) // 2 - 1) // 2``. Inputs too short for the convolutions give 0.
    Works on ints and on integer tensors.
    """
    out = lengths
    for kernel, stride in _layout(rate):
        out = (out - kernel) // stride + 1
    if isinstance(out, torch.Tensor):
        return out.clamp(min=0)
    return max(out, 0)


class Conv2dSubsampling(nn.Module):
    """Conv2d stack (ReLU after each) + linear projection to ``output_size``.

    Args:
        input_size: feature dimension D of the input ``[B, T, D]``.
        output_size: dimension of the output.
        rate: 4, 6 or 8 (see ``SUBSAMPLING_LAYOUTS``).
        channels: channels of every conv layer; ``None`` = ``output_size`` (ESPnet's choice).
            The convolutions run at the full frame rate, so on a CPU they can take ~40% of a
            training step of a small Conformer; fewer channels make them cheaper (the cost of
            the second conv grows with ``channels**2``).
    """

    def __init__(self, input_size: int, output_size: int, rate: int = 4, channels: int | None = None) -> None:
        super().__init__()
        self.rate = rate
        channels = output_size if channels is None else int(channels)
        if channels < 1:
            raise ValueError(f"subsampling channels must be positive, got {channels}")
        layers: list[nn.Module] = []
        in_channels = 1
        for kernel, stride in _layout(rate):
            layers += [nn.Conv2d(in_channels, channels, kernel, stride), nn.ReLU()]
            in_channels = channels
        self.conv = nn.Sequential(*layers)
        freq = subsampled_length(input_size, rate)
        if freq < 1:
            raise ValueError(f"input_size {input_size} is too small for subsampling rate {rate}")
        self.out = nn.Linear(channels * freq, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[B, T, D], lengths[B]`` -> ``(y[B, T', output_size], subsampled lengths[B])``.

        A batch shorter than :func:`min_input_length` is padded so the convolutions can run; its
        utterances get length 0 (nothing to decode) instead of an error.
        """
        short = min_input_length(self.rate) - x.size(1)
        if short > 0:
            x = nn.functional.pad(x, (0, 0, 0, short))
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, subsampled_length(lengths, self.rate)
