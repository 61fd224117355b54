"""Checkpoint files: where they live, atomic saving, loading, averaging.

Layout under an experiment directory::

    exp_dir/checkpoints/last.pt        full training state (see Trainer.state_dict), for resume
    exp_dir/checkpoints/last.prev.pt   the previous last.pt, kept while a new one is written
    exp_dir/checkpoints/epoch{N}.pt    {"model": state_dict, "epoch", "step", "stats"}; only the
                                       N best by ``best_model_criterion`` are kept
    exp_dir/{phase}.{metric}.ave_{N}best.pt   {"model": averaged state_dict, "epochs": [...]}

Every file is a dict with a ``"model"`` state dict; :func:`load_model_state_dict` also accepts a
bare state dict. Saving writes ``name.pt.tmp`` and renames it over ``name.pt``, so a reader never
sees half a file; with ``keep_previous`` the old file is first renamed to ``name.prev.pt``, so a
crash at any moment leaves at least one complete checkpoint (``find_resume_checkpoint`` looks at
both).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


def checkpoint_dir(exp_dir: PathLike) -> Path:
    """``exp_dir/checkpoints``."""
    return Path(exp_dir) / "checkpoints"


def last_checkpoint_path(exp_dir: PathLike) -> Path:
    """``exp_dir/checkpoints/last.pt``: the full state the Trainer resumes from."""
    return checkpoint_dir(exp_dir) / "last.pt"


def epoch_checkpoint_path(exp_dir: PathLike, epoch: int) -> Path:
    """``exp_dir/checkpoints/epoch{N}.pt``: model weights after epoch N."""
    return checkpoint_dir(exp_dir) / f"epoch{epoch}.pt"


def previous_path(path: PathLike) -> Path:
    """``x/last.pt`` -> ``x/last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def save_checkpoint(state: dict, path: PathLike, keep_previous: bool = False) -> None:
    """Write ``state`` with torch.save to ``path`` atomically (tmp file + ``os.replace``).

    With ``keep_previous`` an existing ``path`` is moved to :func:`previous_path` just before the
    new file takes its place. If writing fails, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data does
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file written by :func:`save_checkpoint` (full dict, tensors on ``map_location``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    # weights_only=False: our own full checkpoints hold RNG states and plain python bookkeeping.
    return torch.load(path, map_location=map_location, weights_only=False)


def load_model_state_dict(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model state dict in ``path``: a checkpoint's ``"model"`` entry, or a bare state dict."""
    ckpt = load_checkpoint(path, map_location)
    return ckpt["model"] if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) else ckpt


def find_resume_checkpoint(exp_dir: PathLike) -> Path | None:
    """``last.pt`` if present, else ``last.prev.pt`` (a crash between the two renames), else None."""
    last = last_checkpoint_path(exp_dir)
    for candidate in (last, previous_path(last)):
        if candidate.is_file():
            return candidate
    return None


def average_checkpoints(paths: Sequence[PathLike]) -> dict[str, torch.Tensor]:
    """Average the model parameters of ``paths`` and return the averaged state dict.

    Floating-point tensors are averaged (accumulated in float64, cast back to their dtype).
    Integer and bool tensors (e.g. BatchNorm's ``num_batches_tracked``) cannot be meaningfully
    averaged and are taken from the LAST path in the list.
    """
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    sums: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_model_state_dict(path)
        if last and set(state) != set(last):
            raise ValueError(f"{path}: parameter names differ from {paths[0]}")
        for name, value in state.items():
            if value.is_floating_point():
                acc = value.to(torch.float64)
                sums[name] = acc if name not in sums else sums[name] + acc
        last = state
    out: dict[str, torch.Tensor] = {}
    for name, value in last.items():
        out[name] = (sums[name] / len(paths)).to(value.dtype) if name in sums else value.clone()
    return out


def trainable_state_keys(model: nn.Module) -> set[str]:
    """State-dict names a trainable-only checkpoint holds: parameters with ``requires_grad`` and
    the buffers of modules that own such parameters (BatchNorm statistics of a trained encoder).
    Frozen parts (a pretrained LLM, a frozen encoder) are left out: they are rebuilt from their
    own source (hub id, local dir) when the model is built again."""
    keys = {name for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            keys.update(f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False))
    return keys & set(model.state_dict())  # non-persistent buffers are never saved


def check_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``ValueError`` when ``state`` (a trainable-only checkpoint) does not fit ``model``:
    names the model does not have, or trainable names missing from ``state``."""
    own = set(model.state_dict())
    unexpected = sorted(set(state) - own)
    missing = sorted(trainable_state_keys(model) - set(state))
    if unexpected or missing:
        raise ValueError(f"{source}: does not fit the model: {len(unexpected)} unknown names "
                         f"{unexpected[:5]}, {len(missing)} trainable names missing {missing[:5]}")
