"""Conformer encoder: Conv2dSubsampling -> sinusoidal positions -> torchaudio's Conformer blocks.

The blocks are ``torchaudio.models.Conformer`` (Gulati et al. 2020), not a reimplementation. Two
things are added around them so that padding cannot change the outputs of valid frames:

* the layers are called with a key-padding mask built from the subsampled lengths (torchaudio's
  own ``forward`` assumes the batch is padded to exactly ``max(lengths)``);
* a forward pre-hook zeroes padded frames at the input of each depthwise convolution. Without it
  the bias of the pointwise conv and the GLU make padded frames non-zero, and the depthwise kernel
  would mix them into the last valid frames.

BatchNorm in the convolution module uses batch statistics in training mode (padded frames
included, as in other toolkits); in eval mode it uses running statistics and padding is inert.
"""
from __future__ import annotations

import torch
from torch import nn
from torchaudio.models import Conformer

from speechllm.nets.positional_encoding import PositionalEncoding
from speechllm.nets.subsampling import Conv2dSubsampling, subsampled_length


def _zero_padded_frames(conv: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
    """Forward pre-hook of a depthwise conv: multiply its input ``[B, C, T]`` by ``conv.valid_frames``.

    The mask lives on the conv module itself (set by the encoder around each layer call), so the
    hook also works on module copies (deepcopy, DataParallel replicas).
    """
    valid = getattr(conv, "valid_frames", None)
    if valid is None:
        return None
    return (args[0] * valid,) + tuple(args[1:])


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool ``[B, max_len]``, True at padded positions (``t >= lengths[b]``)."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


class ConformerEncoder(nn.Module):
    """Speech encoder ``forward(x[B,T,input_size], lengths) -> (out[B,T',output_size], out_lengths)``.

    Args (ESPnet/WeNet names, so ``encoder_conf`` blocks carry over):
        input_size: feature dimension (80 for fbank).
        output_size: model dimension of every block.
        attention_heads: heads of the self-attention.
        linear_units: hidden size of the feed-forward modules.
        num_blocks: number of Conformer blocks.
        cnn_module_kernel: depthwise convolution kernel (odd).
        dropout_rate: dropout inside the blocks.
        subsampling_rate: 4, 6 or 8 (frame rate 40/60/80 ms for 10 ms features).
        subsampling_channels: channels of the conv2d subsampling; ``None`` = ``output_size``.
        positional_dropout_rate: dropout after adding positional encodings.
        convolution_first: run the convolution module before self-attention.
        interctc_layer_idx: 1-based block indices whose outputs :meth:`forward` also returns
            when asked (``return_intermediate=True``) for intermediate CTC (Lee & Watanabe 2021).
    """

    input_kind = "fbank"  # forward takes features [B, T, input_size]; see speechllm.nets.encoders

    def __init__(
        self,
        input_size: int,
        output_size: int = 256,
        attention_heads: int = 4,
        linear_units: int = 1024,
        num_blocks: int = 12,
        cnn_module_kernel: int = 31,
        dropout_rate: float = 0.1,
        subsampling_rate: int = 4,
        subsampling_channels: int | None = None,
        positional_dropout_rate: float = 0.1,
        convolution_first: bool = False,
        interctc_layer_idx: list[int] | tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        bad = [i for i in interctc_layer_idx if not 1 <= int(i) < num_blocks]
        if bad:
            raise ValueError(f"interctc_layer_idx {bad} out of range: use blocks 1..{num_blocks - 1} "
                             "(the last block's output is the encoder output)")
        self.interctc_layer_idx = sorted(int(i) for i in interctc_layer_idx)
        self._output_size = output_size
        self.subsampling = Conv2dSubsampling(input_size, output_size, subsampling_rate, subsampling_channels)
        self.pos_enc = PositionalEncoding(output_size, positional_dropout_rate)
        self.conformer = Conformer(
            input_dim=output_size,
            num_heads=attention_heads,
            ffn_dim=linear_units,
            num_layers=num_blocks,
            depthwise_conv_kernel_size=cnn_module_kernel,
            dropout=dropout_rate,
            convolution_first=convolution_first,
        )
        for layer in self.conformer.conformer_layers:
            self._depthwise_conv(layer).register_forward_pre_hook(_zero_padded_frames)

    @staticmethod
    def _depthwise_conv(layer: nn.Module) -> nn.Conv1d:
        for m in layer.conv_module.modules():
            if isinstance(m, nn.Conv1d) and m.groups > 1 and m.groups == m.in_channels:
                return m
        raise RuntimeError("torchaudio Conformer layer without a depthwise Conv1d; cannot mask padding")

    def output_size(self) -> int:
        """Dimension of the encoder output."""
        return self._output_size

    def frame_rate(self) -> float:
        """Output frames per second for 10 ms fbank frames."""
        return 100.0 / self.subsampling.rate

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for ``lengths`` input frames, without running the encoder."""
        return subsampled_length(lengths, self.subsampling.rate)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_intermediate: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Encode ``x[B, T, D]`` with ``lengths[B]``; padded output frames are zero.

        With ``return_intermediate`` also returns the outputs of the ``interctc_layer_idx`` blocks
        (``[B, T', D]`` each, same lengths) as a third element.
        """
        x, lengths = self.subsampling(x, lengths)
        x = self.pos_enc(x)
        pad = make_pad_mask(lengths, x.size(1))
        valid = (~pad).unsqueeze(1).to(x.dtype)  # [B, 1, T'] like the conv input [B, C, T']
        h = x.transpose(0, 1)  # torchaudio layers take [T, B, D]
        intermediate: list[torch.Tensor] = []
        for index, layer in enumerate(self.conformer.conformer_layers, start=1):
            conv = self._depthwise_conv(layer)
            conv.valid_frames = valid  # read by _zero_padded_frames during this call only
            try:
                h = layer(h, pad)
            finally:
                conv.valid_frames = None
            if return_intermediate and index in self.interctc_layer_idx:
                intermediate.append(h.transpose(0, 1).masked_fill(pad.unsqueeze(-1), 0.0))
        out = h.transpose(0, 1).masked_fill(pad.unsqueeze(-1), 0.0)
        if return_intermediate:
            return out, lengths, intermediate
        return out, lengths
