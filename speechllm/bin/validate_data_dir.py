"""Check a Kaldi data dir and print every problem found (exit status 1 if any).

Example::

    python -m speechllm.bin.validate_data_dir data/train --check_audio --sample_rate 16000
"""
from __future__ import annotations

import argparse
import logging
import sys

from speechllm.bin import exit_on_user_error
from speechllm.data.datadir import DEFAULT_REQUIRED, validate_data_dir
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="the data dir to check")
    p.add_argument("--required", nargs="*", default=list(DEFAULT_REQUIRED), help="files that must exist (default: %(default)s)")
    p.add_argument("--check_audio", action="store_true", help="decode every wav.scp entry (slow)")
    p.add_argument("--sample_rate", type=int, default=None, help="with --check_audio: the expected sample rate in Hz")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    problems = validate_data_dir(args.data_dir, args.required, check_audio=args.check_audio, expected_sr=args.sample_rate)
    for problem in problems:
        print(problem)
    if problems:
        logger.error("%s: %s problem%s found", args.data_dir, f"{len(problems):,}", "" if len(problems) == 1 else "s")
        return 1
    logger.info("%s: no problems found", args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
