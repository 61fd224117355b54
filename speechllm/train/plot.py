"""Training curves as PNG files: one ``images/{stat}.png`` per stat, train and valid per epoch.

Uses matplotlib's Agg canvas directly (no pyplot global state), so it works headless and from
any thread, and never changes the backend other code chose.
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# history[phase][epoch] = {stat: value}, phase in ("train", "valid")
History = dict[str, dict[int, dict[str, float]]]


def plot_training_curves(history: History, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``out_dir/{stat}.png`` for every stat seen in any phase; return the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = sorted({k for per_epoch in history.values() for s in per_epoch.values() for k in s})
    written = []
    for stat in stats:
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for phase in sorted(history):
            points = sorted((e, s[stat]) for e, s in history[phase].items() if stat in s)
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", label=phase)
        ax.set_xlabel("epoch")
        ax.set_ylabel(stat)
        ax.set_title(stat)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{_safe_name(stat)}.png"
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=80)
        os.replace(tmp, path)  # a viewer refreshing the image never reads half a file
        written.append(path)
    return written


def _safe_name(stat: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stat)
