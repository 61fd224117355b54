"""The one training loop for every task (ASR now; speech LLM and TTS use the same one).

Contract with the model: ``loss, stats = model(batch)``, ``batch`` a dict (tensor values are moved
to the device here), ``loss`` a scalar tensor, ``stats`` a dict of floats (``loss``, ``acc``, ...)
that is averaged weighted by batch size for logging, validation and best-model selection.

Contract with the datasets: map-style (``__getitem__``, ``__len__``) with ``.lengths`` (one int per
item, e.g. frames) used to build length-bucketed batches; ``collate_fn(items) -> batch dict``.
``batch_bins`` counts frames (``frame_shift`` seconds each: 10 ms fbank frames by default); a dataset
whose lengths (and ``feats_lens``) are in finer units says how many make one frame with
``.length_per_bin`` (raw 16 kHz audio: 160 samples per 10 ms).

What one ``Trainer.run()`` does, per epoch: train over a :class:`BucketBatchSampler` (gradient
accumulation, clipping, AMP (bf16/fp16 on CUDA, bf16 on the CPU), skip of non-finite losses), validate, save
``checkpoints/epoch{N}.pt`` and keep the N best, save ``checkpoints/last.pt`` (the full state),
update TensorBoard and ``images/*.png``. At the end it writes the average of the N best and
``train_time.json``, the wall time of every process that trained it (:mod:`speechllm.train.train_time`).

Exact resume: ``last.pt`` holds model, optimizer, scheduler, GradScaler, the sampler position
inside the epoch, step/epoch counters, best-model history and every rank's python/numpy/torch
RNG states, so N steps + resume + N steps equals 2N steps. That holds for randomness in the main
process (model dropout, SpecAugment inside the model, ``num_workers: 0`` data loading). DataLoader
workers are reseeded per epoch (``seed + epoch``), not restored mid-epoch, so random augmentation
done inside workers differs after a mid-epoch resume; collates that draw per example use
:func:`speechllm.data.example_rng.example_rng` instead, which a resume does not change.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechllm.data.sampler import BucketBatchSampler
from speechllm.nets.dropout import DROPOUT_IMPLS, apply_dropout_impl
from speechllm.train import distributed as D
from speechllm.train.checkpoint import (
    average_checkpoints,
    check_trainable_state,
    checkpoint_dir,
    epoch_checkpoint_path,
    find_resume_checkpoint,
    last_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    trainable_state_keys,
)
from speechllm.train.plot import plot_training_curves
from speechllm.train.train_time import TrainTime, describe_train_time
from speechllm.train.scheduler import build_scheduler
from speechllm.utils.config import ConfigError, load_yaml, save_config

logger = logging.getLogger(__name__)

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}

# Every key the Trainer reads, with its default. A config's own keys win (top level only: a
# given ``optim_conf`` replaces the default one whole); other keys (model, data) pass through.
DEFAULTS: dict[str, Any] = {
    "max_epoch": 10,
    "batch_bins": 20000,  # max frames (incl. padding) per training batch
    "valid_batch_bins": None,  # None: same as batch_bins
    "max_batch_size": None,
    "sortagrad_epochs": 0,  # epochs 1..N take batches shortest first (curriculum), then shuffled
    "num_workers": 2,
    "accum_grad": 1,
    "grad_clip": 5.0,  # max grad L2 norm; <= 0 disables clipping (the norm is still logged)
    "optim": "adam",
    "optim_conf": {"lr": 1.0e-3},
    "scheduler": "constant",
    "scheduler_conf": {},
    "amp_dtype": "none",  # bf16 | fp16 | none; on the CPU only bf16 (fp16 is ignored there)
    "ngpu": 0,  # 0: CPU; > 0: one CUDA device per process (cuda:LOCAL_RANK)
    "seed": 0,
    "keep_nbest_models": 5,
    "best_model_criterion": [["valid", "loss", "min"]],
    "log_interval": 50,  # optimizer steps between train log lines / TensorBoard points
    "save_interval_steps": 0,  # > 0: also save last.pt every that many steps (mid-epoch)
    "max_bad_steps": 10,  # consecutive non-finite losses before giving up
    "frame_shift": 0.01,  # seconds per frame (feats_lens / length_per_bin), for the input-seconds-per-second rate
    "resume": True,  # continue from exp_dir/checkpoints/last.pt when it exists
    "ddp_find_unused_parameters": False,
    # ddp: every rank holds the whole model. fsdp: FSDP2 shards the decoder layers of the LLM
    # inside the model (their class comes from its _no_split_modules) when it does not fit one device.
    "distributed_strategy": "ddp",
    # nn.Dropout layers: native, packed (speechllm.nets.dropout: ~4x fewer random draws, ~24% of
    # a CPU training step was bernoulli_) or auto (packed on the CPU, native on CUDA).
    "dropout_impl": "auto",
}


def amp_enabled(dtype: torch.dtype | None, device: torch.device) -> bool:
    """Whether to autocast to ``dtype`` on ``device``: any AMP dtype on CUDA, bf16 on the CPU.

    CPU bf16 autocast pays off where the CPU has bf16 instructions (AVX512-BF16 or AMX): the
    mini_synth Conformer trains ~1.45x faster that way on an AVX512-BF16 EPYC. Elsewhere it
    still works but is emulated, so it is allowed with a warning. fp16 on the CPU is ignored.
    """
    if dtype is None:
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu" or dtype != torch.bfloat16:
        return False
    native = [getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(native):
        logger.warning("amp_dtype=bf16 on a CPU without bf16 instructions: emulated, likely slower than fp32")
    return True


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive batches with a NaN/inf loss or gradient."""


def resolve_config(config: dict) -> dict:
    """``DEFAULTS`` overlaid with ``config``, validated; ``best_model_criterion`` as a list of triples."""
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(config))
    crit = out["best_model_criterion"]
    if isinstance(crit, (list, tuple)) and len(crit) == 3 and all(isinstance(x, str) for x in crit):
        crit = [crit]  # a single [phase, metric, mode]
    out["best_model_criterion"] = [list(c) for c in crit]
    for c in out["best_model_criterion"]:
        if len(c) != 3 or c[0] not in ("train", "valid") or c[2] not in ("min", "max"):
            raise ConfigError(f"best_model_criterion entry {c}: expected [train|valid, METRIC, min|max]")
    for key in ("optim_conf", "scheduler_conf"):
        out[key] = {k: _number(v) for k, v in (out[key] or {}).items()}
    if out["optim"] not in OPTIMIZERS:
        raise ConfigError(f"optim '{out['optim']}': choose from {sorted(OPTIMIZERS)}")
    if out["distributed_strategy"] not in ("ddp", "fsdp"):
        raise ConfigError(f"distributed_strategy '{out['distributed_strategy']}': choose ddp or fsdp")
    if out["distributed_strategy"] == "fsdp" and out["amp_dtype"] == "fp16":
        raise ConfigError("distributed_strategy fsdp trains with amp_dtype bf16 or none (no fp16 loss scaling)")
    if out["dropout_impl"] not in DROPOUT_IMPLS:
        raise ConfigError(f"dropout_impl '{out['dropout_impl']}': choose from {list(DROPOUT_IMPLS)}")
    if out["amp_dtype"] not in AMP_DTYPES:
        raise ConfigError(f"amp_dtype '{out['amp_dtype']}': choose from {sorted(AMP_DTYPES)}")
    for key in ("accum_grad", "keep_nbest_models", "max_bad_steps", "log_interval", "max_epoch"):
        if int(out[key]) < 1:
            raise ConfigError(f"{key} must be >= 1, got {out[key]}")
    return out


def _number(value: Any) -> Any:
    # PyYAML reads ``lr: 1e-3`` (no dot) as a string; the optimizers need a float.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """This process's python, numpy, torch and (if any) CUDA RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


class WeightedStats:
    """Running sums of ``stat * weight`` per key (weight = batch size), for weighted means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, stats: dict[str, Any], weight: float) -> None:
        for k, v in stats.items():
            if v is None:
                continue
            v = float(v)
            if not math.isfinite(v):
                continue
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
            self.weights[k] = self.weights.get(k, 0.0) + weight

    def mean(self, reduce: bool = False) -> dict[str, float]:
        """Weighted means; ``reduce=True`` pools all ranks (a collective: call on every rank)."""
        sums, weights = self.sums, self.weights
        if reduce:
            total = D.all_reduce_sums({**{f"s/{k}": v for k, v in sums.items()},
                                       **{f"w/{k}": v for k, v in weights.items()}})
            sums = {k[2:]: v for k, v in total.items() if k.startswith("s/")}
            weights = {k[2:]: v for k, v in total.items() if k.startswith("w/")}
        return {k: sums[k] / weights[k] for k in sorted(sums) if weights.get(k, 0) > 0}

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.weights = dict(state["sums"]), dict(state["weights"])


def _batch_size(batch: dict) -> int:
    if "utt_ids" in batch:
        return len(batch["utt_ids"])
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return 1


def _bin_lengths(dataset: Any) -> list[int]:
    """Item lengths in ``batch_bins`` units (rounded up): ``.lengths`` / ``.length_per_bin`` (default 1)."""
    per_bin = int(getattr(dataset, "length_per_bin", 1))
    return [-(-int(n) // per_bin) for n in dataset.lengths]


def _fmt(stats: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in stats.items())


class Trainer:
    """Train ``model`` on ``train_dataset``, validate on ``valid_dataset``, write into ``exp_dir``.

    Args:
        model: ``loss, stats = model(batch)``; moved to the device (and DDP-wrapped when
            ``WORLD_SIZE > 1``) here.
        config: training options, see ``DEFAULTS`` (other keys are kept and saved verbatim).
        exp_dir: experiment directory (config.yaml, checkpoints/, tensorboard/, images/).
        train_dataset, valid_dataset: map-style datasets with ``.lengths``.
        collate_fn: items -> batch dict (DataLoader's default collation when None).
        valid_collate_fn: the validation set's, when it must differ (e.g. no random prompt choice).

    Under torchrun the process group is started from the environment here. The global RNGs are
    seeded with ``seed + rank`` (different dropout masks per rank); build the model before,
    seeded with ``seed`` alone, so that every rank starts from the same weights.
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict,
        exp_dir: str | os.PathLike,
        train_dataset: Any,
        valid_dataset: Any,
        collate_fn: Callable[[list], dict] | None = None,
        valid_collate_fn: Callable[[list], dict] | None = None,
    ) -> None:
        self.config = c = resolve_config(config)
        self.exp_dir = Path(exp_dir)
        self.dist = D.init_distributed(use_cuda=int(c["ngpu"]) > 0)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        set_seed(int(c["seed"]) + self.dist.rank)

        self.model = model.to(self.device)
        n = apply_dropout_impl(self.model, c["dropout_impl"], self.device)
        logger.info("dropout_impl %s: %d nn.Dropout layers use PackedDropout", c["dropout_impl"], n)
        self.train_model: nn.Module = self.model
        # Trainable-only checkpoints: a model with a frozen pretrained part (an LLM) saves just what
        # it trains; the frozen part is rebuilt from its own source.
        self.trainable_only = bool(getattr(model, "checkpoint_trainable_only", False))
        self.fsdp = self.dist.world_size > 1 and c["distributed_strategy"] == "fsdp"
        if self.fsdp:
            n = D.apply_fsdp(self.model)
            logger.info("FSDP: %d decoder layers sharded over %d ranks", n, self.dist.world_size)
        elif self.dist.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(c["ddp_find_unused_parameters"]),
            )

        self.train_dataset, self.valid_dataset = train_dataset, valid_dataset
        self.collate_fn = collate_fn
        self.valid_collate_fn = valid_collate_fn or collate_fn
        self.train_sampler = BucketBatchSampler(
            _bin_lengths(train_dataset), int(c["batch_bins"]), shuffle=True, seed=int(c["seed"]),
            rank=self.dist.rank, world_size=self.dist.world_size, max_batch_size=c["max_batch_size"],
            shortest_first_epochs=int(c["sortagrad_epochs"]),
        )
        self.valid_sampler = BucketBatchSampler(
            _bin_lengths(valid_dataset), int(c["valid_batch_bins"] or c["batch_bins"]), shuffle=False,
            rank=self.dist.rank, world_size=self.dist.world_size, max_batch_size=c["max_batch_size"],
            # DDP: every valid utterance exactly once over all ranks. FSDP: every rank must run
            # the same number of forwards (collectives), so shards are padded with repeated
            # batches, which validate() gives weight 0.
            even_shards=self.fsdp,
        )

        self.accum_grad = int(c["accum_grad"])
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = OPTIMIZERS[c["optim"]](params, **(c["optim_conf"] or {}))
        updates_per_epoch = math.ceil(len(self.train_sampler) / self.accum_grad)
        self.scheduler = build_scheduler(
            c["scheduler"], self.optimizer, c["scheduler_conf"], total_steps=int(c["max_epoch"]) * updates_per_epoch
        )

        self.amp_dtype = AMP_DTYPES[c["amp_dtype"]]
        self.use_amp = amp_enabled(self.amp_dtype, self.device)
        if self.amp_dtype is not None and not self.use_amp:
            logger.info("amp_dtype=%s ignored on %s: the CPU autocasts to bf16 only", c["amp_dtype"], self.device)
        # Loss scaling only for fp16; bf16 has fp32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and c["amp_dtype"] == "fp16")

        # Progress, all saved in last.pt.
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer updates applied
        self.batches_done = 0  # batches consumed in epoch self.epoch + 1
        self.bad_steps = 0  # consecutive skipped batches
        self.history: dict[str, dict[int, dict[str, float]]] = {"train": {}, "valid": {}}
        self.epoch_stats = WeightedStats()
        self.interval_stats = WeightedStats()
        self._resume_sampler_state: dict | None = None
        self.train_time = TrainTime()  # wall time per process that trained, across resumes
        self._writer = None
        self._last_grad_norm = float("nan")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """The full training state (a collective under DDP: every rank must call it)."""
        rng = D.all_gather_object(get_rng_state())  # each rank's RNGs, so every rank resumes exactly
        return {
            "format_version": 1,
            "model": self._model_state(),  # the unwrapped module: no "module." prefixes
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "sampler": {**self.train_sampler.state_dict(), "epoch": self.epoch + 1, "position": self.batches_done},
            "epoch": self.epoch,
            "step": self.step,
            "batches_done": self.batches_done,
            "bad_steps": self.bad_steps,
            "history": copy.deepcopy(self.history),
            "epoch_stats": self.epoch_stats.state_dict(),
            "interval_stats": self.interval_stats.state_dict(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "time_segments": self.train_time.snapshot(self.step),
            "config": self.config,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; training continues where it stopped."""
        self._load_model_state(state["model"])
        self._load_optimizer_state(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batches_done, self.bad_steps = int(state["batches_done"]), int(state["bad_steps"])
        self.history = {phase: {int(e): s for e, s in h.items()} for phase, h in state["history"].items()}
        self.epoch_stats.load_state_dict(state["epoch_stats"])
        self.interval_stats.load_state_dict(state["interval_stats"])
        self._resume_sampler_state = state["sampler"] if self.batches_done > 0 else None
        self.train_time.load(state.get("time_segments"), self.step)
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            logger.warning("checkpoint has RNG states of %d ranks, this run has %d: exact resume not possible",
                           len(rng), self.dist.world_size)
        set_rng_state(rng[self.dist.rank % len(rng)])

    # ------------------------------------------------------------------ main loop

    def run(self) -> dict[str, dict[int, dict[str, float]]]:
        """Train up to ``max_epoch`` (resuming if allowed), average the best; return the history."""
        c = self.config
        if self.is_main:
            self._write_config()
        if c["resume"]:
            path = find_resume_checkpoint(self.exp_dir)
            if path is not None:
                self.load_state_dict(load_checkpoint(path, map_location="cpu"))
                logger.info("resumed from %s: epoch %d done, step %d, %d batches into epoch %d",
                            path, self.epoch, self.step, self.batches_done, self.epoch + 1)
        self.train_time.start(self.step, self.dist.world_size, self.device.type)
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter  # imported late: slow to import

            self._writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.step or None)
        try:
            while self.epoch < int(c["max_epoch"]):
                self._run_epoch(self.epoch + 1)
            if self.is_main:
                self.average_best()
                info = self.train_time.write(self.exp_dir, self.step, self.epoch)
                logger.info("training time: %s", describe_train_time(info))
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        D.barrier()
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        t0 = time.time()
        frames = self._train_epoch(epoch)
        train_stats = self.epoch_stats.mean(reduce=True)
        frames = D.all_reduce_sums({"frames": frames})["frames"]
        train_secs = time.time() - t0
        valid_stats = self.validate()
        self.epoch, self.batches_done = epoch, 0
        self.epoch_stats, self.interval_stats = WeightedStats(), WeightedStats()
        self.history["train"][epoch] = train_stats
        self.history["valid"][epoch] = valid_stats
        self._check_criteria(epoch)  # on every rank: all of them must stop together
        model_state = self._model_state()  # a collective under FSDP
        if self.is_main:
            self._write_epoch_outputs(epoch, model_state)
            lr = self.optimizer.param_groups[0]["lr"]
            speed = f", {frames * float(self.config['frame_shift']) / train_secs:.1f} s of input per s" if frames else ""
            logger.info("epoch %d/%d: step %d, train %s | valid %s | lr %.3e, %.1f s%s",
                        epoch, int(self.config["max_epoch"]), self.step, _fmt(train_stats), _fmt(valid_stats),
                        lr, time.time() - t0, speed)
        # Last thing of the epoch, so that the saved RNG state is where the next epoch starts.
        self._save_last()

    def _write_epoch_outputs(self, epoch: int, model_state: dict) -> None:
        """Rank 0: epoch checkpoint (pruned to the N best), TensorBoard epoch scalars, PNG curves."""
        train_stats, valid_stats = self.history["train"][epoch], self.history["valid"][epoch]
        save_checkpoint(
            {"model": model_state, "epoch": epoch, "step": self.step,
             "stats": {"train": train_stats, "valid": valid_stats}},
            epoch_checkpoint_path(self.exp_dir, epoch),
        )
        self._prune_epoch_checkpoints()
        # x = global step, so epoch averages line up with the per-interval train curves.
        for tag, stats in (("train_epoch", train_stats), ("valid", valid_stats)):
            for k, v in stats.items():
                self._writer.add_scalar(f"{tag}/{k}", v, self.step)
        self._writer.add_scalar("epoch", epoch, self.step)
        self._writer.flush()
        plot_training_curves(self.history, self.exp_dir / "images")

    def _train_epoch(self, epoch: int) -> float:
        """One pass over this rank's batches; returns input frames seen (sum of feats_lens)."""
        sampler = self.train_sampler
        if self._resume_sampler_state is not None and self._resume_sampler_state["epoch"] == epoch:
            sampler.load_state_dict(self._resume_sampler_state)
        else:
            sampler.set_epoch(epoch)
        if hasattr(self.collate_fn, "set_epoch"):  # e.g. a schedule inside the collate (MTBI interleaving)
            self.collate_fn.set_epoch(epoch)
        self._resume_sampler_state = None
        start, n = sampler.position, len(sampler)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum, frames = 0, 0.0
        pbar = tqdm(total=n, initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                    disable=not (self.is_main and sys.stderr.isatty()))
        for i, batch in enumerate(self._loader(self.train_dataset, sampler, epoch), start):
            batch = self._to_device(batch)
            is_update = accum + 1 >= self.accum_grad or i == n - 1
            # Under DDP only the last micro-batch of an update all-reduces gradients.
            sync = contextlib.nullcontext()
            if not is_update and isinstance(self.train_model, nn.parallel.DistributedDataParallel):
                sync = self.train_model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    loss, stats = self.train_model(batch)
                # All ranks must agree to skip, or DDP would wait for a backward that never comes.
                if not D.all_true(bool(torch.isfinite(loss.detach()).all())):
                    self._skip_batch(epoch, i, n, f"non-finite loss ({loss.item()})")
                    accum, self.batches_done = 0, i + 1
                    pbar.update(1)
                    continue
                self.scaler.scale(loss / self.accum_grad).backward()
            accum += 1
            bs = _batch_size(batch)
            stats = {"loss": float(loss.detach()), **{k: float(v) for k, v in stats.items()}}
            self.epoch_stats.add(stats, bs)
            self.interval_stats.add(stats, bs)
            if "feats_lens" in batch:
                frames += float(batch["feats_lens"].sum()) / getattr(self.train_dataset, "length_per_bin", 1)
            self.batches_done = i + 1
            if is_update:
                accum = 0
                if self._optimizer_step(epoch, i, n):
                    self._after_step(epoch, i, n)
            pbar.update(1)
            if (i + 1) % 10 == 0:
                pbar.set_postfix(loss=f"{stats['loss']:.3f}", step=self.step)
        pbar.close()
        return frames

    def _optimizer_step(self, epoch: int, i: int, n: int) -> bool:
        """Unscale, clip, step; False when the update was skipped (non-finite grads)."""
        self.scaler.unscale_(self.optimizer)
        clip = float(self.config["grad_clip"])
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf")))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self._skip_batch(epoch, i, n, f"non-finite gradient norm ({grad_norm})")
            return False
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.optimizer)  # fp16: skipped by the scaler when grads overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            logger.info("fp16 gradient overflow at step %d: update skipped, loss scale now %g",
                        self.step, self.scaler.get_scale())
            return False
        self.scheduler.step()
        self.step += 1
        self.bad_steps = 0
        self._last_grad_norm = grad_norm
        return True

    def _after_step(self, epoch: int, i: int, n: int) -> None:
        """Interval logging and interval checkpointing after an applied update."""
        c = self.config
        if self.step % int(c["log_interval"]) == 0:
            stats = self.interval_stats.mean()  # this rank's batches: no collective mid-epoch
            self.interval_stats = WeightedStats()
            lr = self.optimizer.param_groups[0]["lr"]
            if self.is_main:
                for k, v in stats.items():
                    self._writer.add_scalar(f"train/{k}", v, self.step)
                self._writer.add_scalar("train/lr", lr, self.step)
                self._writer.add_scalar("train/grad_norm", self._last_grad_norm, self.step)
                logger.info("epoch %d step %d (batch %d/%d): %s lr %.3e grad_norm %.3g",
                            epoch, self.step, i + 1, n, _fmt(stats), lr, self._last_grad_norm)
        interval = int(c["save_interval_steps"] or 0)
        if interval > 0 and self.step % interval == 0:
            self._save_last()

    def _skip_batch(self, epoch: int, i: int, n: int, why: str) -> None:
        """Drop this batch (and gradients accumulated for the pending update); stop after K in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        limit = int(self.config["max_bad_steps"])
        logger.warning("epoch %d batch %d/%d (step %d): %s; batch skipped, no update (%d in a row, limit %d)",
                       epoch, i + 1, n, self.step, why, self.bad_steps, limit)
        if self.bad_steps >= limit:
            raise NonFiniteLossError(
                f"stopping: {self.bad_steps} consecutive batches with {why.split(' (')[0]} "
                f"(epoch {epoch}, batch {i + 1}/{n}, step {self.step}); check the learning rate, "
                f"amp_dtype and the data; max_bad_steps={limit}"
            )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Average the model's stats over the validation set (weighted by batch size, all ranks)."""
        self.model.eval()  # the unwrapped module: no DDP collectives during validation
        stats = WeightedStats()
        self.valid_sampler.set_epoch(0)
        n_real = len(self.valid_sampler.batches)
        for j, batch in enumerate(self._loader(self.valid_dataset, self.valid_sampler, 0)):
            batch = self._to_device(batch)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                loss, s = self.model(batch)
            # FSDP pads the shards with repeated batches (global index >= n_real): run, not counted.
            if self.dist.rank + j * self.dist.world_size < n_real:
                stats.add({"loss": float(loss), **{k: float(v) for k, v in s.items()}}, _batch_size(batch))
        self.model.train()
        return stats.mean(reduce=True)

    # ------------------------------------------------------------------ helpers

    def _loader(self, dataset: Any, sampler: BucketBatchSampler, epoch: int) -> DataLoader:
        # An own generator: creating the loader iterator would otherwise draw from the global
        # torch RNG, which would break exact resume.
        gen = torch.Generator().manual_seed(int(self.config["seed"]) + epoch)
        collate = self.valid_collate_fn if dataset is self.valid_dataset else self.collate_fn
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                          num_workers=int(self.config["num_workers"]),
                          pin_memory=self.device.type == "cuda", generator=gen)

    def _to_device(self, batch: dict) -> dict:
        if not isinstance(batch, dict):
            raise TypeError(f"collate_fn must return a dict batch, got {type(batch).__name__}")
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _model_state(self) -> dict:
        """Model weights to save (every rank must call it: a collective under FSDP). Under FSDP
        the full tensors are gathered to rank 0's CPU; a trainable-only model keeps only
        :func:`trainable_state_keys`."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = self.model.state_dict()
        if self.trainable_only:
            keys = trainable_state_keys(self.model)
            state = {k: v for k, v in state.items() if k in keys}
        return state

    def _load_model_state(self, state: dict) -> None:
        if self.trainable_only:
            check_trainable_state(self.model, state, "checkpoint")
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True,
                                                                              strict=not self.trainable_only))
        else:
            self.model.load_state_dict(state, strict=not self.trainable_only)

    def _optimizer_state(self) -> dict:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _load_optimizer_state(self, state: dict) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, state,
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state)

    def _save_last(self) -> None:
        state = self.state_dict()  # collective (RNG states of all ranks)
        if self.is_main:
            save_checkpoint(state, last_checkpoint_path(self.exp_dir), keep_previous=True)

    def _write_config(self) -> None:
        path = self.exp_dir / "config.yaml"
        if path.is_file():
            old = load_yaml(path)
            changed = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            if changed:
                logger.warning("%s: config differs from the previous run in %s; overwriting", path, changed)
        save_config(self.config, path)

    # ------------------------------------------------------------------ best models

    def _check_criteria(self, epoch: int) -> None:
        for phase, metric, _ in self.config["best_model_criterion"]:
            have = self.history[phase].get(epoch, {})
            if metric not in have:
                raise ConfigError(f"best_model_criterion [{phase}, {metric}]: the model reports no "
                                  f"'{metric}' ({phase} stats: {sorted(have)})")

    def nbest_epochs(self, phase: str, metric: str, mode: str) -> list[int]:
        """Epochs of the ``keep_nbest_models`` best values of ``phase.metric``, best first
        (ties: the later epoch first)."""
        scored = [(s[metric], e) for e, s in self.history[phase].items()
                  if metric in s and math.isfinite(s[metric])]
        scored.sort(key=lambda t: (-t[0] if mode == "max" else t[0], -t[1]))
        return [e for _, e in scored[: int(self.config["keep_nbest_models"])]]

    def _prune_epoch_checkpoints(self) -> None:
        keep = {e for crit in self.config["best_model_criterion"] for e in self.nbest_epochs(*crit)}
        for path in checkpoint_dir(self.exp_dir).glob("epoch*.pt"):
            m = re.fullmatch(r"epoch(\d+)\.pt", path.name)
            if m and int(m.group(1)) not in keep:
                path.unlink()

    def average_best(self) -> list[Path]:
        """Write ``{phase}.{metric}.ave_{N}best.pt`` per criterion (N = keep_nbest_models; fewer
        epochs are averaged when fewer exist), plus links ``{phase}.{metric}.best.pt`` (the best
        epoch) and ``{phase}.{metric}.ave.pt`` (the average)."""
        n = int(self.config["keep_nbest_models"])
        written = []
        for phase, metric, mode in self.config["best_model_criterion"]:
            epochs = [e for e in self.nbest_epochs(phase, metric, mode)
                      if epoch_checkpoint_path(self.exp_dir, e).is_file()]
            if not epochs:
                logger.warning("no epoch checkpoints to average for %s.%s", phase, metric)
                continue
            out = self.exp_dir / f"{phase}.{metric}.ave_{n}best.pt"
            avg = average_checkpoints([epoch_checkpoint_path(self.exp_dir, e) for e in epochs])
            save_checkpoint({"model": avg, "epochs": epochs, "criterion": [phase, metric, mode]}, out)
            _link(out.name, self.exp_dir / f"{phase}.{metric}.ave.pt")
            _link(os.path.relpath(epoch_checkpoint_path(self.exp_dir, epochs[0]), self.exp_dir),
                  self.exp_dir / f"{phase}.{metric}.best.pt")
            logger.info("averaged %d checkpoints by %s.%s (%s), epochs %s -> %s",
                        len(epochs), phase, metric, mode, epochs, out)
            written.append(out)
        return written


def _link(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` (relative), replacing an old link atomically."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
