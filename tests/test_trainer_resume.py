"""Exact resume: N steps + resume + N steps gives the same model as 2N steps uninterrupted.

The toy model has dropout, so this only holds if the RNG states are restored too; the crash is
simulated by the model raising at a chosen training forward call.
"""
import json

import pytest
import torch

from speechllm.data.example_rng import example_rng
from speechllm.train import Trainer
from speechllm.train.checkpoint import load_checkpoint, last_checkpoint_path
from speechllm.train.train_time import describe_train_time
from trainer_toys import CrashError, ToyDataset, ToyModel, collate_toy, toy_config


def train(exp_dir, config, crash_at=None, init_seed=0, collate=collate_toy):
    torch.manual_seed(init_seed)
    model = ToyModel(crash_at=crash_at)
    trainer = Trainer(model, config, exp_dir, ToyDataset(24), ToyDataset(8, seed=1), collate)
    trainer.run()
    return trainer


def assert_same_model(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def check_resume(tmp_path, config, crash_at, expect_mid_epoch, collate=collate_toy):
    reference = train(tmp_path / "straight", config, collate=collate)
    with pytest.raises(CrashError):
        train(tmp_path / "resumed", config, crash_at=crash_at, collate=collate)
    ckpt = load_checkpoint(last_checkpoint_path(tmp_path / "resumed"))
    assert (ckpt["batches_done"] > 0) == expect_mid_epoch
    assert 0 < ckpt["step"] < reference.step
    # A different initialisation proves the weights come from the checkpoint.
    resumed = train(tmp_path / "resumed", config, init_seed=123, collate=collate)
    assert resumed.step == reference.step
    assert_same_model(reference, resumed)
    assert resumed.history == reference.history
    assert resumed.optimizer.param_groups[0]["lr"] == reference.optimizer.param_groups[0]["lr"]


def test_resume_at_epoch_boundary_matches_uninterrupted(tmp_path):
    # 24 utterances, batch_bins 40 -> 6 batches per epoch; crash at the first batch of epoch 2.
    check_resume(tmp_path, toy_config(), crash_at=7, expect_mid_epoch=False)


def test_resume_mid_epoch_with_accumulation_matches_uninterrupted(tmp_path):
    # accum_grad 2 -> 3 updates per epoch; last.pt every 2 updates, the one at step 4 is after
    # batch 2 of epoch 2; the crash comes at batch 4 of epoch 2, so batches 3-4 are redone.
    config = toy_config(accum_grad=2, save_interval_steps=2)
    check_resume(tmp_path, config, crash_at=10, expect_mid_epoch=True)


class DrawingCollate:
    """collate_toy plus a draw per example in the DataLoader worker (as the speech-LLM and MTBI
    collates draw wordings, targets and spans): a random offset of each target."""

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = seed, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, items: list[dict]) -> dict:
        batch = collate_toy(items)
        offsets = [example_rng(self.seed, self.epoch, it["utt_id"]).gauss(0.0, 1.0) for it in items]
        batch["target"] = batch["target"] + torch.tensor(offsets)
        return batch


def test_resume_mid_epoch_with_draws_in_a_worker_matches_uninterrupted(tmp_path):
    # the worker's random state is not saved; example_rng does not need it
    config = toy_config(save_interval_steps=2, num_workers=1)
    check_resume(tmp_path, config, crash_at=10, expect_mid_epoch=True, collate=DrawingCollate(0))


def test_more_epochs_after_a_finished_run_match_one_longer_run(tmp_path):
    reference = train(tmp_path / "straight", toy_config(max_epoch=2))
    train(tmp_path / "extended", toy_config(max_epoch=1))
    extended = train(tmp_path / "extended", toy_config(max_epoch=2), init_seed=7)
    assert_same_model(reference, extended)


def test_resume_false_starts_over(tmp_path):
    first = train(tmp_path, toy_config(max_epoch=1))
    again = train(tmp_path, toy_config(max_epoch=1, resume=False))
    assert again.step == first.step  # trained from scratch, not "already done"


def test_train_time_counts_every_process_up_to_its_last_save(tmp_path):
    # last.pt every 2 updates; the crash at batch 10 comes after the save at step 8, so the
    # first process's segment ends at step 8 and the second one's runs from there to the end.
    config = toy_config(save_interval_steps=2)
    with pytest.raises(CrashError):
        train(tmp_path, config, crash_at=10)
    saved = load_checkpoint(last_checkpoint_path(tmp_path))["time_segments"]
    assert [(s["from_step"], s["to_step"]) for s in saved] == [(0, 8)]
    resumed = train(tmp_path, config)
    info = json.loads((tmp_path / "train_time.json").read_text())
    segments = info["segments"]
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 8), (8, resumed.step)]
    assert segments[0] == saved[0]
    assert all(s["seconds"] > 0 and s["threads"] == torch.get_num_threads() for s in segments)
    assert info["complete"] and info["steps"] == resumed.step
    assert info["wall_seconds"] == pytest.approx(sum(s["seconds"] for s in segments), abs=0.11)
    assert describe_train_time(info).endswith(f"{resumed.step:,} steps in 2 runs "
                                              f"({torch.get_num_threads()} thread"
                                              f"{'s' if torch.get_num_threads() > 1 else ''} each)")


def test_train_time_of_a_checkpoint_from_before_segments_is_unknown(tmp_path):
    config = toy_config(save_interval_steps=2)
    with pytest.raises(CrashError):
        train(tmp_path, config, crash_at=10)
    path = last_checkpoint_path(tmp_path)
    state = load_checkpoint(path)
    del state["time_segments"]
    torch.save(state, path)
    train(tmp_path, config)
    info = json.loads((tmp_path / "train_time.json").read_text())
    assert not info["complete"] and info["segments"][0] == {"from_step": 0, "to_step": 8, "seconds": None}
    assert info["wall_seconds"] == info["segments"][1]["seconds"]
    assert "the time of 8 steps is unknown" in describe_train_time(info)
