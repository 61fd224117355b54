"""Mixed precision: bf16 autocast on the CPU as well as on CUDA; fp16 only on CUDA."""
import logging

import torch

from speechllm.train import Trainer
from speechllm.train.trainer import amp_enabled
from trainer_toys import ToyDataset, ToyModel, collate_toy, toy_config


class RecordingModel(ToyModel):
    """Records, per forward, whether autocast was on and the dtype of the first layer's output."""

    def __init__(self) -> None:
        super().__init__(dropout=0.0)
        self.seen: list[tuple[bool, bool, torch.dtype]] = []

    def forward(self, batch: dict):
        h = self.lin1(batch["feats"])
        self.seen.append((self.training, torch.is_autocast_enabled("cpu"), h.dtype))
        return super().forward(batch)


def run_toy(tmp_path, amp_dtype: str) -> Trainer:
    torch.manual_seed(0)
    model = RecordingModel()
    trainer = Trainer(model, toy_config(max_epoch=1, amp_dtype=amp_dtype), tmp_path,
                      ToyDataset(16), ToyDataset(8, seed=1), collate_toy)
    trainer.run()
    return trainer


def test_amp_enabled_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_enabled(None, cpu) is False
    assert amp_enabled(torch.bfloat16, cpu) is True
    assert amp_enabled(torch.float16, cpu) is False  # no fp16 autocast on the CPU
    assert amp_enabled(torch.float16, cuda) is True
    assert amp_enabled(torch.bfloat16, cuda) is True


def test_bf16_on_cpu_autocasts_training_and_validation(tmp_path):
    trainer = run_toy(tmp_path, "bf16")
    seen = trainer.model.seen
    assert {training for training, _, _ in seen} == {True, False}  # both phases ran
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in seen)
    # Autocast computes in bf16 but the weights (and their optimizer state) stay fp32.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.step > 0 and all(v == v for v in trainer.history["valid"][1].values())


def test_no_amp_and_fp16_on_cpu_run_in_fp32(tmp_path, caplog):
    for amp_dtype in ("none", "fp16"):
        with caplog.at_level(logging.INFO, logger="speechllm.train.trainer"):
            trainer = run_toy(tmp_path / amp_dtype, amp_dtype)
        assert all(not on and dtype == torch.float32 for _, on, dtype in trainer.model.seen)
    assert "amp_dtype=fp16 ignored on cpu" in caplog.text
