"""FSDP2 on two CPU processes (gloo): sharding by the LLM's own decoder-layer class, trainable-only
checkpoints with full (unsharded) tensors, exact resume, and the same result as DDP.

The toy model holds a tiny random ``transformers`` Llama with most of it frozen, like a speech LLM
whose LLM is frozen apart from a few weights.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from transformers import LlamaConfig, LlamaModel

from trainer_toys import ToyDataset, collate_toy, toy_config

N_TRAIN, N_VALID, LEN = 24, 10, 5  # batches of 4 utterances: 6 per epoch, 3 per rank; valid 3 batches
CONFIG = toy_config(max_epoch=2, batch_bins=20, optim="adam", optim_conf={"lr": 0.01}, scheduler="constant",
                    scheduler_conf={}, grad_clip=1.0, best_model_criterion=["valid", "loss", "min"])


class ToyLLMModel(nn.Module):
    """Linear -> tiny Llama (frozen except the q projections) -> mean pool -> Linear, MSE loss."""

    checkpoint_trainable_only = True

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 16)
        self.llm = LlamaModel(LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          num_key_value_heads=1, intermediate_size=32, vocab_size=11))
        for name, p in self.llm.named_parameters():
            p.requires_grad = "q_proj" in name
        self.out = nn.Linear(16, 1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        x, lens = batch["feats"], batch["feats_lens"]
        mask = (torch.arange(x.shape[1])[None, :] < lens[:, None]).long()
        h = self.llm(inputs_embeds=self.inp(x), attention_mask=mask).last_hidden_state
        pred = (self.out(h).squeeze(-1) * mask).sum(1) / mask.sum(1)
        loss = ((pred - batch["target"]) ** 2).mean()
        return loss, {"loss": float(loss.detach())}


def new_model() -> ToyLLMModel:
    torch.manual_seed(0)
    return ToyLLMModel()


def worker(rank, world_size, port, exp_dir, strategy, max_epoch):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from speechllm.train import Trainer
    from speechllm.train.distributed import cleanup

    config = {**CONFIG, "distributed_strategy": strategy, "max_epoch": max_epoch}
    trainer = Trainer(new_model(), config, exp_dir, ToyDataset(N_TRAIN, fixed_len=LEN),
                      ToyDataset(N_VALID, seed=1, fixed_len=LEN), collate_toy)
    assert trainer.fsdp == (strategy == "fsdp")
    trainer.run()
    cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(exp_dir, strategy, max_epoch):
    mp.spawn(worker, args=(2, free_port(), str(exp_dir), strategy, max_epoch), nprocs=2, join=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ddp, fsdp = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("fsdp")
    spawn(ddp, "ddp", 2)
    spawn(fsdp, "fsdp", 1)
    spawn(fsdp, "fsdp", 2)  # resumes from epoch 1's last.pt
    load = lambda d: torch.load(d / "checkpoints" / "last.pt", weights_only=False)  # noqa: E731
    return load(ddp), load(fsdp)


def test_wrap_classes_come_from_the_llm():
    from speechllm.train.distributed import fsdp_wrap_classes

    assert {c.__name__ for c in fsdp_wrap_classes(new_model())} == {"LlamaDecoderLayer"}
    with pytest.raises(ValueError, match="_no_split_modules"):
        from speechllm.train.distributed import apply_fsdp
        apply_fsdp(nn.Linear(2, 2))


def test_checkpoint_holds_only_trainable_full_tensors(runs):
    ddp, fsdp = runs
    model = new_model()
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    for ckpt in (ddp, fsdp):
        assert set(ckpt["model"]) == expected
        for name, value in ckpt["model"].items():
            assert type(value) is torch.Tensor and value.shape == model.state_dict()[name].shape, name


def test_fsdp_with_resume_equals_ddp(runs):
    ddp, fsdp = runs
    assert ddp["step"] == fsdp["step"] == 6
    for name, value in ddp["model"].items():
        assert torch.allclose(fsdp["model"][name], value, atol=1e-5), name
    # Validation pads the FSDP shards but counts every utterance once: same averages as DDP.
    assert fsdp["history"]["valid"][2]["loss"] == pytest.approx(ddp["history"]["valid"][2]["loss"], rel=1e-5)
