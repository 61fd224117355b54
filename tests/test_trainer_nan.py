"""A NaN loss skips its batch with a warning; K in a row stop the run with a clear error."""
import logging

import pytest
import torch

from speechllm.train import NonFiniteLossError, Trainer
from trainer_toys import ToyDataset, ToyModel, collate_toy, toy_config


def make_trainer(tmp_path, nan_ids, **overrides):
    torch.manual_seed(0)
    train_set = ToyDataset(24, nan_ids=nan_ids)
    return Trainer(ToyModel(dropout=0.0), toy_config(max_epoch=1, **overrides), tmp_path,
                   train_set, ToyDataset(8, seed=1), collate_toy)


def test_nan_batch_is_skipped_with_warning(tmp_path, caplog):
    trainer = make_trainer(tmp_path, nan_ids=set())
    trainer.train_sampler.set_epoch(1)
    first_batch = trainer.train_sampler.epoch_batches()[0]
    trainer.train_dataset.nan_ids = {first_batch[0]}  # poison the first batch of epoch 1
    n_batches = len(trainer.train_sampler)
    with caplog.at_level(logging.WARNING):
        trainer.run()
    assert "non-finite loss (nan); batch skipped, no update (1 in a row, limit 10)" in caplog.text
    assert trainer.step == n_batches - 1  # one update fewer, training went on
    assert trainer.bad_steps == 0  # reset by the next good update
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(v == v for v in trainer.history["train"][1].values())  # NaN kept out of the stats


def test_nan_batch_leaves_parameters_untouched(tmp_path):
    # Every batch is NaN except none: with max_bad_steps above the batch count the run ends
    # without any update, so the weights are exactly the initial ones.
    trainer = make_trainer(tmp_path, nan_ids=set(range(24)), max_bad_steps=100)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    assert trainer.step == 0
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None  # grads zeroed


def test_k_consecutive_nan_batches_stop_with_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, nan_ids=set(range(24)), max_bad_steps=3)
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive batches with non-finite loss .*max_bad_steps=3"):
        trainer.run()
    assert trainer.bad_steps == 3
