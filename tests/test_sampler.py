"""BucketBatchSampler: batch size by total padded frames, epoch shuffling, rank shards, resume."""
import logging
import random

import pytest

from speechllm.data.sampler import BucketBatchSampler

LENGTHS = [random.Random(0).randint(5, 100) for _ in range(203)]


def test_batches_respect_batch_bins():
    s = BucketBatchSampler(LENGTHS, batch_bins=400)
    for batch in s:
        assert max(LENGTHS[i] for i in batch) * len(batch) <= 400


def test_indices_in_batch_sorted_longest_first():
    s = BucketBatchSampler(LENGTHS, batch_bins=400)
    for batch in s:
        lens = [LENGTHS[i] for i in batch]
        assert lens == sorted(lens, reverse=True)


def test_max_batch_size_caps_utterances_per_batch():
    s = BucketBatchSampler(LENGTHS, batch_bins=10_000, max_batch_size=7)
    assert max(len(b) for b in s) == 7


def test_overlong_utterance_gets_own_batch_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        s = BucketBatchSampler([10, 500, 10, 10], batch_bins=100)
    assert [1] in list(s)
    assert "1 of 4 utterances are longer than batch_bins=100" in caplog.text


def test_each_utterance_exactly_once_per_epoch():
    s = BucketBatchSampler(LENGTHS, batch_bins=400, seed=5)
    for epoch in (1, 2):
        s.set_epoch(epoch)
        seen = sorted(i for b in s for i in b)
        assert seen == list(range(len(LENGTHS)))


def test_shuffle_deterministic_per_seed_and_epoch():
    def order(seed, epoch):
        s = BucketBatchSampler(LENGTHS, batch_bins=400, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4)
    assert order(1, 3) != order(2, 3)
    assert sorted(map(tuple, order(1, 3))) == sorted(map(tuple, order(1, 4)))  # same batches


def test_no_shuffle_keeps_order():
    s = BucketBatchSampler(LENGTHS, batch_bins=400, shuffle=False)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) == first


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_equal_length_and_disjoint_up_to_padding(world_size):
    full = BucketBatchSampler(LENGTHS, batch_bins=400, seed=4)
    full.set_epoch(2)
    n = len(full)
    shards = []
    for rank in range(world_size):
        s = BucketBatchSampler(LENGTHS, batch_bins=400, seed=4, rank=rank, world_size=world_size)
        s.set_epoch(2)
        shards.append([tuple(b) for b in s])
        assert len(shards[-1]) == len(s) == -(-n // world_size)
    all_batches = [b for shard in shards for b in shard]
    pad = len(all_batches) - n
    assert pad == (-n) % world_size
    assert len(set(all_batches)) == n  # every batch present; duplicates are only the padding
    assert sorted(i for b in set(all_batches) for i in b) == list(range(len(LENGTHS)))


def test_drop_last_drops_remainder_instead_of_padding():
    shards = [BucketBatchSampler(LENGTHS, batch_bins=400, rank=r, world_size=3, drop_last=True) for r in range(3)]
    n = len(BucketBatchSampler(LENGTHS, batch_bins=400))
    assert all(len(s) == n // 3 for s in shards)
    batches = [tuple(b) for s in shards for b in s]
    assert len(batches) == len(set(batches))


def test_uneven_shards_cover_every_batch_once():
    shards = [BucketBatchSampler(LENGTHS, batch_bins=400, shuffle=False, rank=r, world_size=3, even_shards=False)
              for r in range(3)]
    batches = [tuple(b) for s in shards for b in s]
    assert sum(len(s) for s in shards) == len(batches) == len(BucketBatchSampler(LENGTHS, batch_bins=400))
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))


def test_mid_epoch_state_resume_continues_with_same_remaining_batches():
    s = BucketBatchSampler(LENGTHS, batch_bins=400, seed=9, rank=1, world_size=2)
    s.set_epoch(3)
    it = iter(s)
    consumed = [next(it) for _ in range(4)]
    state = s.state_dict()
    rest = list(it)
    assert state["epoch"] == 3 and state["position"] == 4

    fresh = BucketBatchSampler(LENGTHS, batch_bins=400, seed=9, rank=1, world_size=2)
    fresh.load_state_dict(state)
    assert list(fresh) == rest
    again = BucketBatchSampler(LENGTHS, batch_bins=400, seed=9, rank=1, world_size=2)
    again.set_epoch(3)
    assert consumed + rest == list(again)


def test_load_state_rejects_changed_data():
    s = BucketBatchSampler(LENGTHS, batch_bins=400)
    state = s.state_dict()
    with pytest.raises(ValueError, match="cannot continue mid-epoch"):
        BucketBatchSampler(LENGTHS[:50], batch_bins=400).load_state_dict(state)


def test_shortest_first_epochs_then_shuffled():
    rng = random.Random(0)
    lengths = [rng.randint(5, 100) for _ in range(203)]
    s = BucketBatchSampler(lengths, 300, seed=0, shortest_first_epochs=2)
    for epoch in (1, 2):
        s.set_epoch(epoch)
        longest = [max(lengths[i] for i in b) for b in s.epoch_batches()]
        assert longest == sorted(longest)  # ascending: the curriculum
    s.set_epoch(3)
    longest = [max(lengths[i] for i in b) for b in s.epoch_batches()]
    assert longest != sorted(longest)
    assert sorted(map(tuple, s.epoch_batches())) == sorted(map(tuple, s.batches))
