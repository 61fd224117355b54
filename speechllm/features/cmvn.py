"""Global cepstral mean and variance normalisation (CMVN).

Statistics are accumulated once over a training ``feats.scp`` and saved as JSON
``{"count": N, "sum": [D floats], "sum_sq": [D floats]}`` (float64 sums, so that millions of
frames do not lose precision). :class:`GlobalCMVN` applies them inside the model, so the
statistics travel with the checkpoint. With ``utterance_mean`` it also removes each
utterance's own mean (cepstral mean normalization per utterance, ESPnet's ``utterance_mvn``
without variance scaling): a constant spectral tilt of a voice or channel that training never
heard no longer shifts every frame, while the global statistics keep the scale.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterable

import kaldiio
import numpy as np
import torch
from torch import nn

from speechllm.data.datadir import DataDirError, parse_nonempty, read_table
from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)

# Variance floor: a constant feature dimension must not blow up to inf after division.
VAR_FLOOR = 1.0e-10


def accumulate_cmvn_stats(feats_scp: str | os.PathLike) -> dict:
    """Sum frames and squared frames over every matrix of ``feats_scp``.

    Returns:
        ``{"count": int, "sum": list[float], "sum_sq": list[float]}``.
    """
    entries = read_table(feats_scp, parse_nonempty)
    if not entries:
        raise DataDirError(feats_scp, None, "no entries")
    count, total, total_sq = 0, None, None
    for utt, (lineno, rxspec) in entries.items():
        try:
            mat = np.asarray(kaldiio.load_mat(rxspec), dtype=np.float64)
        except (OSError, ValueError) as e:
            raise DataDirError(feats_scp, lineno, f"'{utt}': cannot read {rxspec}: {e}") from None
        if mat.ndim != 2 or (total is not None and mat.shape[1] != total.shape[0]):
            expected = "[T, D]" if total is None else f"[T, {total.shape[0]}]"
            raise DataDirError(feats_scp, lineno, f"'{utt}': shape {mat.shape}, expected {expected}")
        if total is None:
            total, total_sq = np.zeros(mat.shape[1]), np.zeros(mat.shape[1])
        count += mat.shape[0]
        total += mat.sum(axis=0)
        total_sq += np.square(mat).sum(axis=0)
    logger.info("cmvn stats: %s frames of dim %d from %s utterances", f"{count:,}", total.shape[0], f"{len(entries):,}")
    return {"count": count, "sum": total.tolist(), "sum_sq": total_sq.tolist()}


def save_cmvn_stats(stats: dict, path: str | os.PathLike) -> None:
    """Write stats JSON atomically."""
    atomic_write_text(path, json.dumps(stats) + "\n")


def compute_cmvn_stats(feats_scp: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Accumulate stats from ``feats_scp`` and save them to ``out_path`` (JSON)."""
    stats = accumulate_cmvn_stats(feats_scp)
    save_cmvn_stats(stats, out_path)
    return stats


def stats_to_mean_std(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (float32) from ``{count, sum, sum_sq}``."""
    count = float(stats["count"])
    if count <= 0:
        raise ValueError("cmvn stats have count 0")
    mean = np.asarray(stats["sum"], dtype=np.float64) / count
    var = np.asarray(stats["sum_sq"], dtype=np.float64) / count - mean**2
    std = np.sqrt(np.maximum(var, VAR_FLOOR))
    return mean.astype(np.float32), std.astype(np.float32)


def load_cmvn_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a stats JSON and return ``(mean, std)`` as float32 arrays of shape ``[D]``."""
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    missing = {"count", "sum", "sum_sq"} - set(stats)
    if missing:
        raise ValueError(f"{path}: cmvn stats lack {sorted(missing)}")
    return stats_to_mean_std(stats)


class GlobalCMVN(nn.Module):
    """``(x - mean) / std`` per feature dimension; padded frames stay exactly zero.

    ``mean`` and ``istd`` (1/std) are buffers, so they are saved in the state dict and move
    with ``.to(device)``. ``utterance_mean=True`` then subtracts each utterance's mean over
    its valid frames (per dimension), so every utterance has zero mean.
    """

    def __init__(self, mean: Iterable[float] | torch.Tensor, std: Iterable[float] | torch.Tensor,
                 utterance_mean: bool = False):
        super().__init__()
        self.utterance_mean = bool(utterance_mean)
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be 1-D of equal size, got {tuple(mean.shape)} {tuple(std.shape)}")
        self.register_buffer("mean", mean)
        self.register_buffer("istd", 1.0 / std)

    @classmethod
    def from_stats_file(cls, path: str | os.PathLike, utterance_mean: bool = False) -> "GlobalCMVN":
        """Build from a stats JSON written by :func:`compute_cmvn_stats`."""
        return cls(*load_cmvn_stats(path), utterance_mean=utterance_mean)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` ``[B, T, D]``; frames at ``t >= lengths[b]`` are set to zero."""
        y = (x - self.mean) * self.istd
        if lengths is None:  # every frame is valid
            return y - y.mean(dim=1, keepdim=True) if self.utterance_mean else y
        valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]).unsqueeze(-1)
        y = y.masked_fill(~valid, 0.0)
        if self.utterance_mean:
            count = valid.sum(dim=1, keepdim=True).clamp(min=1)
            y = (y - y.sum(dim=1, keepdim=True) / count).masked_fill(~valid, 0.0)
        return y

    def extra_repr(self) -> str:
        return f"dim={self.mean.numel()}, utterance_mean={self.utterance_mean}"
