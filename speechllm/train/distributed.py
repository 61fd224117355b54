"""Process-group setup from torchrun's environment, and the few collectives the Trainer needs.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; a plain ``python`` run has none of them and is a world of one, with no process
group at all. The backend is NCCL when training on CUDA and gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on this node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    """Read the torchrun env vars; when ``WORLD_SIZE > 1`` start the process group (once).

    ``use_cuda`` picks the device ``cuda:LOCAL_RANK`` and NCCL, else CPU and gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("ngpu > 0 but CUDA is not available; use --ngpu 0 for CPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the one process that writes files and logs progress."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over all ranks. Every rank must pass the same keys."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def all_reduce_stats(stats: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """Weighted mean of per-rank averages ``stats`` (each with ``weight``, e.g. #utterances).

    Returns the global average as if all ranks' samples were pooled; a rank with weight 0
    contributes nothing. Every rank must pass the same keys.
    """
    if not is_distributed():
        return dict(stats)
    sums = {k: float(v) * weight for k, v in stats.items()}
    sums["__weight__"] = float(weight)
    total = all_reduce_sums(sums)
    w = total.pop("__weight__")
    return {k: (v / w if w > 0 else float("nan")) for k, v in total.items()}


def all_true(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank (used to agree on skipping a bad batch)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------
# FSDP: shard models whose LLM does not fit one device
# ----------------------------------------------------------------------------------------

def fsdp_wrap_classes(model: torch.nn.Module) -> set[type]:
    """The classes to shard as units: the decoder-layer classes that each ``transformers`` model
    inside ``model`` names in its own ``_no_split_modules`` (e.g. ``LlamaDecoderLayer``,
    ``Qwen2DecoderLayer``). Nothing is hard-coded, so any LLM family works."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def apply_fsdp(model: torch.nn.Module, mixed_precision: torch.dtype | None = None) -> int:
    """Shard ``model`` in place with FSDP2 (``fully_shard``): each decoder layer of its LLM(s) is
    one unit, the rest of the model (encoder, projector, embeddings, head) the root unit.

    Works with NCCL on CUDA and with gloo on the CPU. Returns the number of wrapped layers;
    raises ``ValueError`` when the model holds no ``transformers`` model to take the layer
    classes from. ``mixed_precision`` (bf16) keeps parameters in that dtype for compute while
    gradients are reduced in float32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    classes = fsdp_wrap_classes(model)
    if not classes:
        raise ValueError("distributed_strategy fsdp: the model holds no transformers model whose "
                         "_no_split_modules names a decoder-layer class to shard; use ddp")
    kwargs: dict[str, Any] = {}
    if mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
    layers = [m for m in model.modules() if type(m) in classes]
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return len(layers)
