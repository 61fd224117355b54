"""After a tiny run: config.yaml, TensorBoard events, curve PNGs, N best and their average."""
import logging

import pytest
import torch
import yaml

from speechllm.train import Trainer
from speechllm.train.checkpoint import average_checkpoints, load_checkpoint
from trainer_toys import ToyDataset, ToyModel, collate_toy, toy_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp")
    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), toy_config(max_epoch=4, keep_nbest_models=2, extra_key="kept"), exp,
                      ToyDataset(24), ToyDataset(8, seed=1), collate_toy)
    trainer.run()
    return exp, trainer


def test_resolved_config_written(run):
    exp, _ = run
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["max_epoch"] == 4 and config["extra_key"] == "kept"
    assert config["accum_grad"] == 1  # a default filled in
    assert config["best_model_criterion"] == [["valid", "acc", "max"]]


def test_tensorboard_event_file(run):
    exp, _ = run
    events = list((exp / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_training_curve_pngs(run):
    exp, _ = run
    for stat in ("loss", "acc"):
        png = exp / "images" / f"{stat}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_keeps_n_best_epoch_checkpoints(run):
    exp, trainer = run
    best = trainer.nbest_epochs("valid", "acc", "max")
    assert len(best) == 2
    kept = sorted(p.name for p in (exp / "checkpoints").glob("epoch*.pt"))
    assert kept == sorted(f"epoch{e}.pt" for e in best)
    assert (exp / "checkpoints" / "last.pt").is_file()
    accs = {e: s["acc"] for e, s in trainer.history["valid"].items()}
    assert all(accs[e] >= accs[o] for e in best for o in accs if o not in best)


def test_average_of_n_best_written(run):
    exp, trainer = run
    ave = load_checkpoint(exp / "valid.acc.ave_2best.pt")
    paths = [exp / "checkpoints" / f"epoch{e}.pt" for e in ave["epochs"]]
    expected = average_checkpoints(paths)
    assert all(torch.equal(ave["model"][k], expected[k]) for k in expected)
    assert (exp / "valid.acc.ave.pt").resolve() == (exp / "valid.acc.ave_2best.pt").resolve()
    assert (exp / "valid.acc.best.pt").resolve() == paths[0].resolve()
    trainer.model.load_state_dict(ave["model"])  # loads into the model as is


def test_last_checkpoint_has_full_state(run):
    exp, trainer = run
    ckpt = load_checkpoint(exp / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "sampler", "rng", "history", "epoch", "step"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 4 and ckpt["step"] == trainer.step
    assert not any(k.startswith("module.") for k in ckpt["model"])


def test_epoch_log_line_has_numbers(tmp_path, caplog):
    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), toy_config(max_epoch=1), tmp_path, ToyDataset(12), ToyDataset(4, seed=1),
                      collate_toy)
    with caplog.at_level(logging.INFO):
        trainer.run()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1:"))
    assert "train acc" in line and "valid acc" in line and "lr " in line and "s of input per s" in line


def test_unknown_criterion_metric_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), toy_config(max_epoch=1, best_model_criterion=["valid", "wer", "min"]),
                      tmp_path, ToyDataset(12), ToyDataset(4, seed=1), collate_toy)
    with pytest.raises(ValueError, match=r"reports no 'wer'"):
        trainer.run()


def test_yaml_exponent_without_dot_is_read_as_number():
    from speechllm.train.trainer import resolve_config

    assert resolve_config({"optim_conf": {"lr": "1e-3"}})["optim_conf"]["lr"] == 0.001
