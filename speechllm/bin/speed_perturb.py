"""Make a speed-perturbed copy of a data dir (sox pipes in wav.scp; ids prefixed ``sp0.9-``).

Factor 1.0 keeps the original ids. Features must be computed afterwards on ``dst``.

Example::

    python -m speechllm.bin.speed_perturb data/train data/train_sp --factors 0.9 1.0 1.1
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.features.speed_perturb import speed_perturb_data_dir
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    speed_perturb_data_dir(args.src, args.dst, args.factors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
