"""Copy a subset of a data dir: the utterances listed in a file, or the first N.

Example::

    python -m speechllm.bin.subset_data_dir data/train data/train_2k --first 2000
    python -m speechllm.bin.subset_data_dir data/train data/train_sel --utt_list ids.txt
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.data.datadir import iter_lines
from speechllm.data.fix_datadir import subset_data_dir
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--first", type=int, help="keep the first N utterances (sorted order)")
    group.add_argument("--utt_list", help="file whose first column lists the utterance ids to keep")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.first is not None:
        subset_data_dir(args.src, args.dst, first=args.first)
    else:
        ids = [line.split()[0] for _, line in iter_lines(args.utt_list) if line.strip()]
        subset_data_dir(args.src, args.dst, ids=ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
