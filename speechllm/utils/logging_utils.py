"""One log format for every entry point."""
from __future__ import annotations

import logging
import os


def setup_logging(level: str | int = "INFO") -> None:
    """Configure the root logger: time, level, module, message; rank-prefixed under DDP."""
    rank = os.environ.get("RANK")
    prefix = f"[rank{rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}(%(module)s:%(lineno)d) %(levelname)s: %(message)s",
        force=True,
    )
