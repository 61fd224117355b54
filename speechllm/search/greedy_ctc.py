"""Greedy (best-path) CTC decoding: per-frame argmax, collapse repeats, drop blanks."""
from __future__ import annotations

import torch


def greedy_ctc(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[tuple[list[int], float]]:
    """Best-path decoding of a batch.

    Args:
        log_probs: CTC log-posteriors ``[B, T, V]``.
        lengths: valid frames per utterance ``[B]``.
        blank: blank id.

    Returns:
        One ``(token_ids, score)`` per utterance; ``score`` is the log probability of the best
        path (sum of the per-frame maxima over valid frames).
    """
    best, ids = log_probs.max(dim=-1)  # [B, T]
    valid = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
    prev = torch.nn.functional.pad(ids[:, :-1], (1, 0), value=-1)
    keep = valid & (ids != blank) & (ids != prev)  # a label starts where it differs from the frame before
    scores = torch.where(valid, best, torch.zeros_like(best)).sum(dim=1)
    ids, keep, scores = ids.cpu(), keep.cpu(), scores.cpu()
    return [(ids[b][keep[b]].tolist(), float(scores[b])) for b in range(ids.size(0))]
