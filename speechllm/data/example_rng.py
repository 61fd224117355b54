"""Per-example random draws that do not depend on how the data is loaded.

A training collate that draws something per example (a prompt wording, an imitation target, the
speech spans of an interleaved example) takes it from :func:`example_rng`: a generator seeded by
the training seed, the epoch and the utterance id. The examples of an epoch are then the same
whichever batch or DataLoader worker an utterance lands in, and a run resumed at any step draws
what the uninterrupted run drew (the Trainer restores the sampler's position, not the workers'
random state).
"""
from __future__ import annotations

import random


def example_rng(seed: int, epoch: int, utt_id: str) -> random.Random:
    """The generator of ``utt_id``'s draws in ``epoch`` of a run seeded with ``seed``."""
    # A str seed is hashed with SHA-512: stable across processes (unlike hash()) and platforms.
    return random.Random(f"{int(seed)}/{int(epoch)}/{utt_id}")
