"""Label-smoothing loss for the attention decoder (Szegedy et al. 2016).

The target distribution puts ``1 - smoothing`` on the reference token and spreads ``smoothing``
evenly over the other ``V - 1`` tokens. The loss is the KL divergence from that distribution to
the model's, i.e. cross-entropy minus the (constant) target entropy, so a perfect model scores 0.
Positions whose target is ``ignore_id`` (-1, padding) count for nothing.

Normalization: ``normalize_length=False`` (default) divides the summed loss by the batch size
(loss per utterance); ``True`` divides by the number of non-ignored tokens (loss per token).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_ID = -1


class LabelSmoothingLoss(nn.Module):
    """``forward(logits[B, L, V], target[B, L]) -> scalar`` (see the module docstring)."""

    def __init__(
        self, size: int, smoothing: float = 0.1, ignore_id: int = IGNORE_ID, normalize_length: bool = False
    ) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.size = size
        self.smoothing = smoothing
        self.ignore_id = ignore_id
        self.normalize_length = normalize_length

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Smoothed KL loss summed over valid tokens, divided by batch size or token count."""
        batch_size = logits.size(0)
        logits = logits.reshape(-1, self.size).float()
        target = target.reshape(-1)
        valid = target != self.ignore_id
        logp = torch.log_softmax(logits[valid], dim=-1)
        tgt = target[valid]
        true_dist = torch.full_like(logp, self.smoothing / (self.size - 1))
        true_dist.scatter_(1, tgt.unsqueeze(1), 1.0 - self.smoothing)
        # kl_div uses xlogy, so zero target probabilities (smoothing=0) give 0, not NaN.
        loss = F.kl_div(logp, true_dist, reduction="sum")
        denom = max(int(valid.sum()), 1) if self.normalize_length else batch_size
        return loss / denom
