"""Make Kaldi data dirs from unpacked LibriSpeech parts (one dir per part).

Reads ``<data_root>/LibriSpeech/<part>/...`` and writes ``<data_dir>/<part with _ for ->``
(``wav.scp`` with FLAC paths, normalized ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur``,
``spk2gender``); see :mod:`speechllm.corpus.librispeech`. Skipped files and malformed lines
are logged and listed in ``<dir>/.prepare/skipped.txt``. A part already prepared from the
same folder is skipped unless ``--overwrite`` is given.

Example::

    python -m speechllm.bin.prepare_librispeech --data_root downloads --data_dir data \\
        --parts dev-clean test-clean --nj 4
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechllm.bin import exit_on_user_error
from speechllm.corpus.librispeech import PARTS, SPEAKER_UNITS, is_prepared, part_dir_name, prepare_part
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", required=True, help="the folder that holds LibriSpeech/")
    p.add_argument("--data_dir", default="data", help="where the data dirs go (default: %(default)s)")
    p.add_argument("--parts", nargs="+", required=True, choices=PARTS, metavar="PART",
                   help=f"parts to prepare: {' '.join(PARTS)}")
    p.add_argument("--speaker_unit", choices=SPEAKER_UNITS, default="reader",
                   help="speaker id: the reader, or reader-chapter as in Kaldi/ESPnet (default: %(default)s)")
    p.add_argument("--nj", type=int, default=1, help="processes reading FLAC headers (default: %(default)s)")
    p.add_argument("--max_problem_fraction", type=float, default=0.01,
                   help="fail a part with more problems than this fraction of its utterances (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="prepare parts again even if already done")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    for part in dict.fromkeys(args.parts):  # keep order, drop repeats
        out_dir = Path(args.data_dir) / part_dir_name(part)
        if not args.overwrite and is_prepared(args.data_root, part, out_dir, args.speaker_unit):
            logger.info("skip: %s already prepared from %s (--overwrite, or remove %s/.prepare/done, to redo)",
                        out_dir, Path(args.data_root) / "LibriSpeech" / part, out_dir)
            continue
        prepare_part(args.data_root, part, out_dir, speaker_unit=args.speaker_unit, nj=args.nj,
                     max_problem_fraction=args.max_problem_fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
