"""Combine several data dirs into one (ids must be unique across them).

Example::

    python -m speechllm.bin.combine_data data/train_all data/train_a data/train_b
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.data.fix_datadir import combine_data_dirs
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dst", help="the combined dir to write")
    p.add_argument("srcs", nargs="+", help="source data dirs")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    combine_data_dirs(args.srcs, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
