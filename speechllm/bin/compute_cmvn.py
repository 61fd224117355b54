"""Accumulate global CMVN statistics (count, sum, sum_sq per dim) from a feats.scp into JSON.

Example::

    python -m speechllm.bin.compute_cmvn dump/train/feats.scp dump/train/cmvn.json
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.features.cmvn import compute_cmvn_stats
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("feats_scp")
    p.add_argument("out_json")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    compute_cmvn_stats(args.feats_scp, args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
