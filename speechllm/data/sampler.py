"""Length-bucketed batch sampler: batches bounded by total padded frames, epoch-seeded, DDP-aware.

Batches are built once from the utterance lengths: utterances are sorted by length and cut
greedily into batches whose *padded* size ``max_len * batch_size`` stays within ``batch_bins``.
Sorting keeps padding small; the batch ORDER is shuffled per epoch (seed + epoch), the batch
CONTENTS stay fixed, which is what makes mid-epoch resume cheap: the state is just
``(epoch, position)``.

Sharding across ranks: the shuffled batch list is padded by repeating batches from its start
until its length divides by ``world_size`` (or the remainder is dropped with
``drop_last=True``), then rank ``r`` takes batches ``r, r + world_size, ...``. Every rank so gets
the same number of batches, which DDP needs (all ranks must take the same number of optimizer
steps). ``even_shards=False`` skips the padding (uneven shards), meant for validation where
repeated batches would bias the averages and no per-batch collective runs.

Curriculum (SortaGrad, Amodei et al. 2016): with ``shortest_first_epochs=N`` epochs ``1..N`` go
through the batches shortest first instead of shuffled. Short utterances are easy to align, which
shortens the plateau at the start of CTC training from scratch.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class BucketBatchSampler(Sampler[list[int]]):
    """Yield lists of dataset indices; see the module docstring for how batches are formed.

    Args:
        lengths: length of each utterance (frames); index ``i`` is dataset item ``i``.
        batch_bins: max ``max_len * batch_size`` of a batch (frames including padding). An
            utterance longer than this gets a batch of its own (counted in a warning).
        shuffle: shuffle the batch order each epoch with ``seed + epoch``.
        seed: base seed of the shuffling.
        rank, world_size: this process's shard.
        sort_in_batch: order the indices inside a batch longest first (else by dataset index).
        max_batch_size: optional cap on the number of utterances per batch.
        drop_last: when sharding, drop the remainder batches instead of repeating batches.
        even_shards: pad/drop so every rank gets the same number of batches (default). False
            gives uneven shards with every batch exactly once over all ranks (validation).
        shortest_first_epochs: epochs ``1..N`` (as numbered by :meth:`set_epoch`) take the batches
            in ascending length instead of shuffled.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_bins: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        sort_in_batch: bool = True,
        max_batch_size: int | None = None,
        drop_last: bool = False,
        even_shards: bool = True,
        shortest_first_epochs: int = 0,
    ) -> None:
        if batch_bins <= 0:
            raise ValueError(f"batch_bins must be > 0, got {batch_bins}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0, got {max_batch_size}")
        self.lengths = [int(n) for n in lengths]
        self.batch_bins = int(batch_bins)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.sort_in_batch = sort_in_batch
        self.max_batch_size = max_batch_size
        self.drop_last = drop_last
        self.even_shards = even_shards
        self.shortest_first_epochs = int(shortest_first_epochs)
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded on this rank
        self.batches = self._make_batches()

    def _make_batches(self) -> list[list[int]]:
        # Longest first, ties by index, so the first item of a batch fixes its padded length.
        order = sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        n_overlong = 0
        for i in order:
            if current:
                padded = self.lengths[current[0]] * (len(current) + 1)
                full = self.max_batch_size is not None and len(current) >= self.max_batch_size
                if padded > self.batch_bins or full:
                    batches.append(current)
                    current = []
            if not current and self.lengths[i] > self.batch_bins:
                n_overlong += 1
            current.append(i)
        if current:
            batches.append(current)
        if n_overlong:
            logger.warning(
                "%d of %d utterances are longer than batch_bins=%d frames; each got a batch of its own",
                n_overlong, len(self.lengths), self.batch_bins,
            )
        if not self.sort_in_batch:
            batches = [sorted(b) for b in batches]
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch (the shuffle depends on ``seed + epoch``)."""
        self.epoch = int(epoch)
        self.position = 0

    def epoch_batches(self) -> list[list[int]]:
        """All batches this rank yields in the current epoch, in order (position ignored)."""
        n = len(self.batches)
        order = list(range(n))
        if 1 <= self.epoch <= self.shortest_first_epochs:
            order.reverse()  # batches are built longest first
        elif self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        if self.world_size > 1 and self.even_shards and n > 0:
            if self.drop_last:
                order = order[: n - n % self.world_size]
            else:
                # Repeat batches from the start so every rank takes the same number of steps.
                pad = (-n) % self.world_size
                order = order + [order[k % n] for k in range(pad)]
        return [self.batches[k] for k in order[self.rank :: self.world_size]]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the whole epoch, not what is left of it)."""
        n = len(self.batches)
        if self.world_size == 1:
            return n
        if not self.even_shards:
            return len(range(self.rank, n, self.world_size))
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def state_dict(self) -> dict:
        """Epoch and position inside it. ``position`` counts batches this sampler has yielded;
        a caller whose DataLoader prefetches (workers) should overwrite it with the number of
        batches it actually consumed, as the Trainer does."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_batches": len(self),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved epoch at the saved position; the next ``iter`` yields the rest."""
        if state.get("num_batches", len(self)) != len(self) or state.get("world_size", 1) != self.world_size:
            raise ValueError(
                f"sampler state is for {state.get('num_batches')} batches x {state.get('world_size')} ranks, "
                f"this sampler has {len(self)} x {self.world_size}: data, batch_bins or ranks changed; "
                "cannot continue mid-epoch"
            )
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
