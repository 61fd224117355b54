"""Two CPU processes with gloo (as torchrun would start them): gradients are averaged.

Each rank trains on its own shard of batches; with equal batch sizes, DDP's averaged gradient
equals the gradient of the mean loss over both ranks' batches together, so the result must
match a single process training on the combined batches.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from speechllm.data.sampler import BucketBatchSampler
from trainer_toys import ToyDataset, ToyModel, collate_toy, toy_config

CONFIG = toy_config(
    max_epoch=2, batch_bins=20, optim="sgd", optim_conf={"lr": 0.1}, scheduler="constant",
    scheduler_conf={}, grad_clip=0, best_model_criterion=["valid", "loss", "min"],
)
N_TRAIN, N_VALID, LEN = 24, 10, 5  # length 5, batch_bins 20: batches of 4; 6 per epoch, 3 per rank


def datasets():
    return ToyDataset(N_TRAIN, fixed_len=LEN), ToyDataset(N_VALID, seed=1, fixed_len=LEN)


def new_model():
    torch.manual_seed(0)
    return ToyModel(dropout=0.0, norm=False)


def worker(rank, world_size, port, exp_dir, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from speechllm.train import Trainer
    from speechllm.train.distributed import cleanup

    train_set, valid_set = datasets()
    trainer = Trainer(new_model(), CONFIG, exp_dir, train_set, valid_set, collate_toy)
    assert isinstance(trainer.train_model, torch.nn.parallel.DistributedDataParallel)
    trainer.run()
    torch.save({"model": trainer.model.state_dict(), "history": trainer.history, "step": trainer.step},
               os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    exp, out = tmp_path_factory.mktemp("exp"), tmp_path_factory.mktemp("out")
    mp.spawn(worker, args=(2, free_port(), str(exp), str(out)), nprocs=2, join=True)
    return exp, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def single_process_on_combined_batches():
    train_set, valid_set = datasets()
    model = new_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    shards = [BucketBatchSampler(train_set.lengths, 20, seed=CONFIG["seed"], rank=r, world_size=2) for r in range(2)]
    for epoch in range(1, CONFIG["max_epoch"] + 1):
        for s in shards:
            s.set_epoch(epoch)
        for b0, b1 in zip(*(s.epoch_batches() for s in shards)):
            loss, _ = model(collate_toy([train_set[i] for i in b0 + b1]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        valid_loss, _ = model(collate_toy([valid_set[i] for i in range(len(valid_set))]))
    return model, float(valid_loss)


def test_both_ranks_end_with_identical_parameters(ddp_run):
    _, results = ddp_run
    assert results[0]["step"] == results[1]["step"] == 6
    for name, value in results[0]["model"].items():
        assert torch.equal(value, results[1]["model"][name]), name


def test_ddp_equals_single_process_on_combined_batches(ddp_run):
    _, results = ddp_run
    reference, valid_loss = single_process_on_combined_batches()
    for name, value in reference.state_dict().items():
        assert torch.allclose(results[0]["model"][name], value, atol=1e-6), name
    # Validation is sharded over ranks and pooled: the average over the whole valid set.
    assert results[0]["history"]["valid"][2]["loss"] == pytest.approx(valid_loss, rel=1e-5)
    assert results[0]["history"] == results[1]["history"]


def test_only_rank0_writes_checkpoints_without_ddp_prefix(ddp_run):
    exp, _ = ddp_run
    ckpt = torch.load(exp / "checkpoints" / "last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len(ckpt["rng"]) == 2  # every rank's RNG state, for exact resume
    assert (exp / "valid.loss.ave_2best.pt").is_file()
