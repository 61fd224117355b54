"""Step-based learning-rate schedules: ``SCHEDULERS[name](optimizer, **scheduler_conf)``.

Every scheduler here is stepped once per optimizer update (not per epoch). The lr used for the
``n``-th update (``n = 1, 2, ...``) is ``base_lr * factor(n)``, where ``base_lr`` is the ``lr``
of ``optim_conf``:

- ``warmuplr``: Noam / ESPnet ``WarmupLR``, ``warmup^0.5 * min(n^-0.5, n * warmup^-1.5)``;
  rises linearly to ``base_lr`` at ``n = warmup_steps``, then decays as ``1/sqrt(n)``.
- ``warmup_cosine``: linear warmup to ``base_lr``, then half a cosine down to
  ``min_lr_ratio * base_lr`` at ``total_steps`` (flat afterwards).
- ``warmup_linear``: linear warmup, then linear decay to ``min_lr_ratio * base_lr`` at
  ``total_steps``.
- ``constant``: ``base_lr`` (after an optional linear warmup).

``total_steps`` may be left out of the config: the Trainer fills it in from
``max_epoch * updates per epoch``.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


class _FactorScheduler(LRScheduler):
    """Base class: ``lr = base_lr * factor(n)`` for the ``n``-th update."""

    def factor(self, n: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        # ``last_epoch`` counts scheduler.step() calls: 0 right after construction, i.e. the lr
        # for the first update, hence ``n = last_epoch + 1``.
        f = self.factor(self.last_epoch + 1)
        return [base * f for base in self.base_lrs]


def _warmup_factor(n: int, warmup_steps: int) -> float:
    return min(1.0, n / warmup_steps) if warmup_steps > 0 else 1.0


class WarmupLR(_FactorScheduler):
    """Noam inverse-sqrt schedule with its peak (``base_lr``) at ``warmup_steps``."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 25000, last_epoch: int = -1) -> None:
        if warmup_steps <= 0:
            raise ValueError(f"warmuplr: warmup_steps must be > 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, last_epoch)

    def factor(self, n: int) -> float:
        w = self.warmup_steps
        return w**0.5 * min(n**-0.5, n * w**-1.5)


class _WarmupDecay(_FactorScheduler):
    """Linear warmup, then a decay shape from 1 to ``min_lr_ratio`` over the remaining steps."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must be > warmup_steps ({warmup_steps})")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def decay(self, progress: float) -> float:  # pragma: no cover - abstract
        """1 at progress 0, 0 at progress 1."""
        raise NotImplementedError

    def factor(self, n: int) -> float:
        if n <= self.warmup_steps:
            return _warmup_factor(n, self.warmup_steps)
        progress = min(1.0, (n - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * self.decay(progress)


class WarmupCosine(_WarmupDecay):
    """Linear warmup then cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""

    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupLinear(_WarmupDecay):
    """Linear warmup then linear decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""

    def decay(self, progress: float) -> float:
        return 1.0 - progress


class ConstantLR(_FactorScheduler):
    """Constant ``base_lr`` after an optional linear warmup."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, last_epoch: int = -1) -> None:
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, last_epoch)

    def factor(self, n: int) -> float:
        return _warmup_factor(n, self.warmup_steps)


SCHEDULERS: dict[str, type[_FactorScheduler]] = {
    "warmuplr": WarmupLR,
    "warmup_cosine": WarmupCosine,
    "warmup_linear": WarmupLinear,
    "constant": ConstantLR,
}

# Schedulers whose length must be known; the Trainer supplies it when the config omits it.
NEEDS_TOTAL_STEPS = ("warmup_cosine", "warmup_linear")


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, conf: dict | None = None, total_steps: int | None = None
) -> _FactorScheduler:
    """Build ``SCHEDULERS[name]`` with ``conf``; ``total_steps`` fills in a missing ``total_steps``."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{name}'; choose from {sorted(SCHEDULERS)}")
    conf = dict(conf or {})
    if name in NEEDS_TOTAL_STEPS and conf.get("total_steps") is None:
        conf["total_steps"] = total_steps
    return SCHEDULERS[name](optimizer, **conf)
