"""Score a decoding: WER/CER (jiwer after the one text normalizer) and per-utterance alignments.

    python -m speechllm.bin.score --ref data/test/text --hyp exp/x/decode/test/text \
        --out_dir exp/x/decode/test/score

Writes ``result.json``, ``result.txt`` and ``per_utt.txt`` into ``--out_dir`` and prints the
summary. Exit status 1 with a ``file:line: what`` message on malformed input.
"""
from __future__ import annotations

import argparse
import logging
import sys

from speechllm.data.datadir import DataDirError
from speechllm.scoring.wer import format_summary, score_dir
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="reference Kaldi text file (utt-id words...)")
    p.add_argument("--hyp", required=True, help="hypothesis Kaldi text file")
    p.add_argument("--out_dir", required=True, help="where result.json, result.txt, per_utt.txt go")
    p.add_argument("--gen_info", help="gen_info of a generative decoder (utt_id num_new_tokens stopped): "
                                      "counts outputs cut at the length bound")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        result = score_dir(args.ref, args.hyp, args.out_dir, args.gen_info)
    except (DataDirError, ValueError) as e:
        print(f"score: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(format_summary(result))
    log.info("wrote %s/result.json, result.txt, per_utt.txt", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
