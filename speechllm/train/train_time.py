"""Wall time of a training run across resumes: ``EXP/train_time.json``.

A run stopped and resumed (a job limit, a lost machine) is timed by no single process, and a
recipe's stage timer only sees the last one. The Trainer therefore keeps one *segment* per
process that trained, ``{"started", "host", "threads", "world_size", "device", "from_step",
"to_step", "seconds"}``, in ``last.pt``, and writes them all to ``train_time.json`` when training
ends. A segment counts the time up to its last saved ``last.pt``: the work a stopped process did
after that is redone by the next one and counted there, once. A checkpoint written before segments
were kept has one segment of unknown length (``seconds: null``) for the steps it holds.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from speechllm.utils.config import atomic_write_text

FILE_NAME = "train_time.json"


class TrainTime:
    """The segments of earlier processes plus the running one (:meth:`start`)."""

    def __init__(self) -> None:
        self.segments: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._t0 = 0.0

    def load(self, segments: list[dict] | None, step: int) -> None:
        """Restore the segments saved in a checkpoint at ``step`` (``None``: from before they were kept)."""
        if segments is None:
            self.segments = [{"from_step": 0, "to_step": step, "seconds": None}] if step else []
        else:
            self.segments = [dict(s) for s in segments]

    def start(self, step: int, world_size: int, device: str) -> None:
        """This process starts (or resumes) training at ``step``."""
        self._current = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                         "host": platform.node(), "threads": torch.get_num_threads(),
                         "world_size": world_size, "device": device, "from_step": step}
        self._t0 = time.monotonic()

    def snapshot(self, step: int) -> list[dict[str, Any]]:
        """Every segment so far, the running one up to now and ``step`` (if it made an update)."""
        if self._current is None or step <= self._current["from_step"]:
            return [dict(s) for s in self.segments]
        now = {**self._current, "to_step": step, "seconds": round(time.monotonic() - self._t0, 1)}
        return [dict(s) for s in self.segments] + [now]

    def write(self, exp_dir: str | os.PathLike, step: int, epoch: int) -> dict[str, Any]:
        """Write ``EXP/train_time.json``; returns what it holds."""
        segments = self.snapshot(step)
        known = [s["seconds"] for s in segments if s.get("seconds") is not None]
        info = {"wall_seconds": round(sum(known), 1), "complete": len(known) == len(segments),
                "steps": step, "epochs": epoch, "segments": segments}
        atomic_write_text(Path(exp_dir) / FILE_NAME, json.dumps(info, indent=2) + "\n")
        return info


def read_train_time(exp_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``EXP/train_time.json`` (None when the run wrote none)."""
    path = Path(exp_dir) / FILE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def describe_train_time(info: dict[str, Any]) -> str:
    """One line, e.g. ``47.3 min of training, 1,810 steps in 2 runs (threads per run: 1, 2)``."""
    segments = info.get("segments") or []
    runs = f"{len(segments)} run{'s' if len(segments) != 1 else ''}"
    text = f"{info['wall_seconds'] / 60:.1f} min of training, {info['steps']:,} steps in {runs}"
    threads = [str(s["threads"]) for s in segments if s.get("threads") is not None]
    if threads:
        if len(set(threads)) == 1:
            text += f" ({threads[0]} thread{'s' if threads[0] != '1' else ''}{' each' if len(threads) > 1 else ''})"
        else:
            text += f" (threads per run: {', '.join(threads)})"
    processes = {int(s.get("world_size") or 1) for s in segments}
    if processes - {1}:
        text += f"; {'/'.join(str(p) for p in sorted(processes))} processes"
    if not info.get("complete", True):
        unknown = sum(s["to_step"] - s["from_step"] for s in segments if s.get("seconds") is None)
        text += f"; the time of {unknown:,} steps is unknown (trained before times were kept)"
    return text
