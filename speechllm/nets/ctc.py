"""CTC head (Graves et al. 2006): a linear layer to the vocabulary and the CTC loss.

Token 0 is the CTC blank. The loss is summed over the batch and divided by the batch size
(the per-utterance negative log-likelihood averaged over utterances).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CTC(nn.Module):
    """``Linear(encoder_output_size, vocab_size)`` + ``F.ctc_loss`` (blank id 0)."""

    def __init__(self, vocab_size: int, encoder_output_size: int, dropout_rate: float = 0.0, blank: int = 0) -> None:
        super().__init__()
        self.blank = blank
        self.dropout = nn.Dropout(dropout_rate)
        self.ctc_lo = nn.Linear(encoder_output_size, vocab_size)

    def forward(self, hs: torch.Tensor, hs_lens: torch.Tensor, ys: torch.Tensor, ys_lens: torch.Tensor) -> torch.Tensor:
        """CTC loss of targets ``ys[B, L]`` (padding anywhere after ``ys_lens``) given ``hs[B, T, D]``.

        Utterances whose targets cannot be aligned (too short for the labels) give an infinite
        loss; ``zero_infinity`` turns that into 0 instead of a NaN gradient.
        """
        logp = torch.log_softmax(self.ctc_lo(self.dropout(hs)).float(), dim=-1).transpose(0, 1)  # [T, B, V]
        targets = ys.masked_fill(ys < 0, 0)  # padding values are ignored but must be valid ids
        loss = F.ctc_loss(logp, targets, hs_lens, ys_lens, blank=self.blank, reduction="sum", zero_infinity=True)
        return loss / hs.size(0)

    def log_softmax(self, hs: torch.Tensor) -> torch.Tensor:
        """Frame log-posteriors ``[B, T, V]``."""
        return torch.log_softmax(self.ctc_lo(hs).float(), dim=-1)

    def argmax(self, hs: torch.Tensor) -> torch.Tensor:
        """Best token per frame ``[B, T]`` (before collapsing repeats and removing blanks)."""
        return self.ctc_lo(hs).argmax(dim=-1)
