"""Dropout whose mask comes from 16-bit slices of 64-bit random integers (fast on the CPU).

``nn.Dropout`` draws one random number per element (``bernoulli_``). On the CPU that draw is
serial and slow: in the mini_synth Conformer (bf16 autocast, 2-core AMD EPYC) the 55 dropout
layers' ``bernoulli_`` took ~24% of a training step (torch.profiler). :class:`PackedDropout`
draws one 64-bit integer per four elements and keeps an element when its 16-bit slice is at
least a threshold, so the drop probability is ``p`` rounded to a multiple of 1/65536 (0.1 ->
0.100006) and the masks are independent across elements as before. Outputs, gradients and the
eval-mode identity are those of ``nn.Dropout``; only the random stream differs.

The Trainer swaps it in for ``nn.Dropout`` layers on the CPU (``dropout_impl``, default
``auto``); CUDA keeps the fused native kernel. Dropout inside ``nn.MultiheadAttention`` (a float
argument, not a layer) is not affected.
"""
from __future__ import annotations

import torch
from torch import nn

DROPOUT_IMPLS = ("auto", "native", "packed")  # the Trainer's dropout_impl values
_SLICES = 4  # 16-bit slices per 64-bit random integer
_LEVELS = 1 << 16


def packed_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with each element zeroed with probability ``p`` (to 1/65536) and the rest scaled by 1/(1-p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + _SLICES - 1) // _SLICES,), dtype=torch.int64, device=x.device)
    slices = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
    keep = slices >= round(p * _LEVELS) - _LEVELS // 2
    # x * bool keeps x's dtype (bf16 under autocast); the python scale does too.
    return x * keep * (1.0 / (1.0 - p))


class PackedDropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` using :func:`packed_dropout` in training mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return packed_dropout(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_packed_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` layer of ``model`` (exact type, not Dropout1d/2d) by a
    :class:`PackedDropout` with the same ``p`` and training flag; returns how many were replaced.
    Dropout layers hold no parameters or buffers, so the state dict is unchanged."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                packed = PackedDropout(child.p)
                packed.train(child.training)
                setattr(parent, name, packed)
                swapped += 1
    return swapped


def apply_dropout_impl(model: nn.Module, impl: str, device: torch.device) -> int:
    """Make ``model``'s ``nn.Dropout`` layers packed when ``impl`` (a :data:`DROPOUT_IMPLS` value)
    asks for it on ``device`` (``auto``: packed on the CPU only); returns how many were replaced."""
    if impl not in DROPOUT_IMPLS:
        raise ValueError(f"dropout_impl '{impl}': choose from {list(DROPOUT_IMPLS)}")
    packed = impl == "packed" or (impl == "auto" and device.type == "cpu")
    return use_packed_dropout(model) if packed else 0
