"""Train a sentencepiece tokenizer (bpe, unigram or char) and write its token list.

Writes ``OUT_DIR/tokenizer.model`` and ``OUT_DIR/tokens.txt`` (0 <blank>, 1 <unk>, pieces,
last <sos/eos>).

Example::

    python -m speechllm.bin.tokenizer_train --input data/train/text --kaldi_text \\
        --model_type bpe --nbpe 500 --out_dir data/token_list/bpe500
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.text.tokenizer import MODEL_TYPES, train_tokenizer
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="plain text, or a Kaldi text with --kaldi_text")
    p.add_argument("--kaldi_text", action="store_true", help="input has an utterance id in its first column")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--model_type", choices=MODEL_TYPES, default="bpe")
    p.add_argument("--nbpe", type=int, default=None, help="sentencepiece vocab size (default 500; char: all characters)")
    p.add_argument("--user_defined_symbols", nargs="*", default=[], help="pieces never split (default: none)")
    p.add_argument("--character_coverage", type=float, default=1.0)
    p.add_argument("--num_threads", type=int, default=1)
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    nbpe = args.nbpe if args.nbpe is not None or args.model_type == "char" else 500
    try:
        train_tokenizer(
            args.input, args.out_dir, model_type=args.model_type, vocab_size=nbpe, kaldi_text=args.kaldi_text,
            user_defined_symbols=args.user_defined_symbols, character_coverage=args.character_coverage,
            num_threads=args.num_threads,
        )
    except (ValueError, OSError) as e:  # e.g. vocab too large for the text, missing input
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
