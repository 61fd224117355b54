"""Checkpoint files: atomic save keeps the previous file, averaging equals the manual mean."""
import os

import pytest
import torch
from torch import nn

from speechllm.train.checkpoint import (
    average_checkpoints,
    epoch_checkpoint_path,
    find_resume_checkpoint,
    last_checkpoint_path,
    load_checkpoint,
    load_model_state_dict,
    save_checkpoint,
    unwrap_model,
)


def test_layout(tmp_path):
    assert last_checkpoint_path(tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert epoch_checkpoint_path(tmp_path, 3) == tmp_path / "checkpoints" / "epoch3.pt"


def test_save_load_round_trip_and_previous_kept(tmp_path):
    path = last_checkpoint_path(tmp_path)
    save_checkpoint({"step": 1}, path, keep_previous=True)
    save_checkpoint({"step": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoints" / "last.prev.pt")["step"] == 1
    assert not list(path.parent.glob("*.tmp"))


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = last_checkpoint_path(tmp_path)
    save_checkpoint({"step": 1}, path, keep_previous=True)
    real_save = torch.save

    def save_half_then_die(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path, keep_previous=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert not (path.parent / "last.pt.tmp").exists()


def test_resume_falls_back_to_previous_when_last_missing(tmp_path):
    # A crash between "last -> last.prev" and "tmp -> last" leaves only last.prev.pt.
    path = last_checkpoint_path(tmp_path)
    assert find_resume_checkpoint(tmp_path) is None
    save_checkpoint({"step": 1}, path, keep_previous=True)
    save_checkpoint({"step": 2}, path, keep_previous=True)
    os.unlink(path)
    assert find_resume_checkpoint(tmp_path) == path.parent / "last.prev.pt"


def _bn_model(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[1].num_batches_tracked.fill_(seed * 10)
    model[1].running_mean.uniform_()
    return model


def test_average_equals_manual_mean_and_int_buffers_from_last(tmp_path):
    models = [_bn_model(s) for s in (1, 2, 3)]
    paths = []
    for k, m in enumerate(models):
        paths.append(tmp_path / f"epoch{k}.pt")
        save_checkpoint({"model": m.state_dict()}, paths[-1])
    avg = average_checkpoints(paths)
    for name, value in models[0].state_dict().items():
        if value.is_floating_point():
            manual = torch.stack([m.state_dict()[name].double() for m in models]).mean(0).float()
            assert torch.equal(avg[name], manual), name
        else:
            assert torch.equal(avg[name], models[-1].state_dict()[name])
    assert int(avg["1.num_batches_tracked"]) == 30


def test_load_model_state_dict_accepts_bare_state_dict(tmp_path):
    m = _bn_model(0)
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    assert set(load_model_state_dict(tmp_path / "bare.pt")) == set(m.state_dict())


def test_unwrap_model_leaves_plain_module():
    m = nn.Linear(2, 2)
    assert unwrap_model(m) is m


def test_average_checkpoints_cli_by_criterion(tmp_path):
    from speechllm.bin.average_checkpoints import main

    models = [_bn_model(s) for s in (1, 2, 3)]
    accs = [0.5, 0.9, 0.7]
    for epoch, (m, acc) in enumerate(zip(models, accs), start=1):
        save_checkpoint({"model": m.state_dict(), "stats": {"valid": {"acc": acc}}}, epoch_checkpoint_path(tmp_path, epoch))
    out = tmp_path / "ave.pt"
    assert main(["--exp_dir", str(tmp_path), "--criterion", "valid", "acc", "max", "--nbest", "2", "--out", str(out)]) == 0
    expected = average_checkpoints([epoch_checkpoint_path(tmp_path, 2), epoch_checkpoint_path(tmp_path, 3)])
    got = load_checkpoint(out)["model"]
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert main(["--out", str(out)]) == 1  # nothing to average: a message, not a traceback
