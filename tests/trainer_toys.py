"""A tiny model and dataset for the Trainer tests (no dependency on the real ASR modules)."""
from __future__ import annotations

import torch
from torch import nn


class ToyDataset(torch.utils.data.Dataset):
    """Random variable-length 'utterances' ``feats[T, dim]`` with a scalar regression target.

    ``lengths`` are the frame counts the sampler buckets on; ``nan_ids`` marks utterances whose
    batch the model turns into a NaN loss; ``fixed_len`` makes all utterances the same length.
    """

    def __init__(self, n: int = 24, dim: int = 4, seed: int = 0, nan_ids: set[int] = frozenset(),
                 fixed_len: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        if fixed_len is None:
            self.lengths = torch.randint(3, 13, (n,), generator=g).tolist()
        else:
            self.lengths = [fixed_len] * n
        self.feats = [torch.randn(t, dim, generator=g) for t in self.lengths]
        self.targets = [float(f.mean() * 3) for f in self.feats]
        self.nan_ids = set(nan_ids)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        return {"utt_id": f"utt{i:03d}", "feats": self.feats[i], "target": self.targets[i],
                "nan": i in self.nan_ids}


def collate_toy(items: list[dict]) -> dict:
    """Zero-pad feats; the batch layout follows the ASR contract (utt_ids, feats, feats_lens)."""
    lens = torch.tensor([it["feats"].shape[0] for it in items])
    feats = torch.zeros(len(items), int(lens.max()), items[0]["feats"].shape[1])
    for b, it in enumerate(items):
        feats[b, : lens[b]] = it["feats"]
    return {"utt_ids": [it["utt_id"] for it in items], "feats": feats, "feats_lens": lens,
            "target": torch.tensor([it["target"] for it in items]),
            "nan": torch.tensor([it["nan"] for it in items])}


class CrashError(Exception):
    """Stands in for a killed job."""


class ToyModel(nn.Module):
    """Linear -> BatchNorm (optional) -> ReLU -> Dropout -> Linear, mean-pooled over valid frames, MSE loss.

    ``crash_at``: raise :class:`CrashError` at that training forward call (1-based), before
    touching any RNG, to simulate a job killed at that point.
    """

    def __init__(self, dim: int = 4, hidden: int = 8, dropout: float = 0.2, crash_at: int | None = None,
                 norm: bool = True) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        # BatchNorm has an integer buffer (num_batches_tracked); off where batch statistics
        # would differ between ranks and one combined batch (DDP equivalence test).
        self.norm = nn.BatchNorm1d(hidden) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(hidden, 1)
        self.crash_at = crash_at
        self.train_calls = 0

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        if self.training:
            self.train_calls += 1
            if self.crash_at is not None and self.train_calls == self.crash_at:
                raise CrashError(f"simulated crash at training forward {self.train_calls}")
        x, lens = batch["feats"], batch["feats_lens"]
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]).float()
        h = self.lin1(x)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h = self.drop(torch.relu(h))
        y = self.lin2(h).squeeze(-1)
        pred = (y * mask).sum(1) / mask.sum(1)
        loss = ((pred - batch["target"]) ** 2).mean()
        if bool(batch["nan"].any()):
            loss = loss * float("nan")
        acc = float(((pred - batch["target"]).abs() < 0.5).float().mean())
        return loss, {"loss": float(loss.detach()), "acc": acc}


def toy_config(**overrides) -> dict:
    """Small, fast, CPU-only training config."""
    config = {
        "max_epoch": 2,
        "batch_bins": 40,
        "num_workers": 0,
        "optim": "adam",
        "optim_conf": {"lr": 0.01},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 3},
        "grad_clip": 1.0,
        "keep_nbest_models": 2,
        "best_model_criterion": [["valid", "acc", "max"]],
        "log_interval": 2,
        "seed": 3,
    }
    config.update(overrides)
    return config
