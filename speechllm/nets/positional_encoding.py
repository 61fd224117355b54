"""Sinusoidal absolute positional encoding (Vaswani et al. 2017), shared by encoder and decoder."""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """``dropout(x * sqrt(d_model) + PE[offset : offset + T])`` for ``x[B, T, d_model]``.

    The scaling by ``sqrt(d_model)`` keeps embeddings and encodings on comparable scales.
    ``offset`` lets one-step decoding add the encoding of the position being scored.
    """

    def __init__(self, d_model: int, dropout_rate: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout_rate)
        self.register_buffer("pe", self._table(max_len), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(length, self.d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: self.d_model // 2])
        return pe

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Scale ``x[B, T, D]``, add the encodings of positions ``offset..offset+T-1``, apply dropout."""
        end = offset + x.size(1)
        if end > self.pe.size(0):  # grow the table for unusually long inputs
            self.pe = self._table(max(end, 2 * self.pe.size(0))).to(self.pe.device)
        pe = self.pe[offset:end].to(dtype=x.dtype, device=x.device)
        return self.dropout(x * self.xscale + pe)
