"""Sort a data dir, intersect ids across its files and drop empty / too short / too long utterances.

Works in place; originals and the list of dropped ids with reasons go to ``<dir>/.backup/``.

Example::

    python -m speechllm.bin.fix_data_dir data/train --min_dur 0.3 --max_dur 20
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.data.fix_datadir import fix_data_dir
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--min_dur", type=float, default=None, help="drop utterances shorter than this (seconds)")
    p.add_argument("--max_dur", type=float, default=None, help="drop utterances longer than this (seconds)")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    fix_data_dir(args.data_dir, min_dur=args.min_dur, max_dur=args.max_dur)
    return 0


if __name__ == "__main__":
    sys.exit(main())
