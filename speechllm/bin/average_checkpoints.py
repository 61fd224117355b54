"""Average the parameters of several checkpoints into one model file.

    # explicit files
    python -m speechllm.bin.average_checkpoints --out exp/x/ave.pt exp/x/checkpoints/epoch{8,9,10}.pt
    # the N best epoch checkpoints kept in an exp dir, by a stat saved with each epoch
    python -m speechllm.bin.average_checkpoints --exp_dir exp/x --criterion valid acc max --nbest 3 --out exp/x/ave3.pt

Floating-point tensors are averaged; integer buffers (e.g. ``num_batches_tracked``) come from
the last checkpoint listed (with ``--exp_dir``: the worst of the N best). The output is
``{"model": state_dict, "sources": [...]}``, loadable like any other checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path

from speechllm.train.checkpoint import average_checkpoints, checkpoint_dir, load_checkpoint, save_checkpoint
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def select_nbest(exp_dir: Path, phase: str, metric: str, mode: str, nbest: int) -> list[Path]:
    """The ``nbest`` epoch checkpoints of ``exp_dir`` by ``stats[phase][metric]``, best first."""
    scored = []
    for path in checkpoint_dir(exp_dir).glob("epoch*.pt"):
        if not re.fullmatch(r"epoch\d+\.pt", path.name):
            continue
        value = load_checkpoint(path).get("stats", {}).get(phase, {}).get(metric)
        if value is not None and math.isfinite(value):
            scored.append((-value if mode == "max" else value, path))
    if not scored:
        raise ValueError(f"{checkpoint_dir(exp_dir)}: no epoch checkpoint with stat {phase}.{metric}")
    return [p for _, p in sorted(scored)[:nbest]]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", type=Path, help="checkpoint files to average")
    p.add_argument("--out", type=Path, required=True, help="output .pt file")
    p.add_argument("--exp_dir", type=Path, help="pick epoch checkpoints from EXP/checkpoints instead")
    p.add_argument("--criterion", nargs=3, default=["valid", "acc", "max"], metavar=("PHASE", "METRIC", "MODE"))
    p.add_argument("--nbest", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    """Average and save; 1 with a message when nothing can be averaged."""
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        if args.exp_dir is not None:
            if args.checkpoints:
                raise ValueError("give checkpoint files or --exp_dir, not both")
            phase, metric, mode = args.criterion
            if mode not in ("min", "max"):
                raise ValueError(f"--criterion mode must be min or max, got {mode}")
            paths = select_nbest(args.exp_dir, phase, metric, mode, args.nbest)
        else:
            paths = args.checkpoints
        if not paths:
            raise ValueError("no checkpoints to average")
        state = average_checkpoints(paths)
    except (ValueError, FileNotFoundError) as e:
        print(f"average_checkpoints: {e}", file=sys.stderr)
        return 1
    save_checkpoint({"model": state, "sources": [str(p) for p in paths]}, args.out)
    logger.info("averaged %d checkpoints (%s) -> %s", len(paths), ", ".join(p.name for p in paths), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
