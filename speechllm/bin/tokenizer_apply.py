"""Tokenize text for inspection: print pieces or ids, one line per input line.

With ``--kaldi_text`` the first column (utterance id) is kept in front of the output.

Example::

    python -m speechllm.bin.tokenizer_apply --model tok/tokenizer.model --token_list tok/tokens.txt \\
        --kaldi_text --output ids data/dev/text
"""
from __future__ import annotations

import argparse
import sys

from speechllm.bin import exit_on_user_error
from speechllm.text.tokenizer import Tokenizer
from speechllm.utils.logging_utils import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", default="-", help="text file ('-' or nothing: stdin)")
    p.add_argument("--model", required=True, help="tokenizer.model")
    p.add_argument("--token_list", required=True, help="tokens.txt")
    p.add_argument("--kaldi_text", action="store_true", help="keep the first column (utterance id) as is")
    p.add_argument("--output", choices=("pieces", "ids", "tokens"), default="pieces",
                   help="pieces: sentencepiece pieces; ids: token-list ids; tokens: token-list strings of the ids")
    return p


def format_line(tok: Tokenizer, text: str, output: str) -> str:
    """One output line for ``text``."""
    if output == "pieces":
        return " ".join(tok.pieces(text))
    ids = tok.encode(text)
    return " ".join(map(str, ids)) if output == "ids" else " ".join(tok.ids_to_tokens(ids))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        tok = Tokenizer(args.model, args.token_list)
    except (ValueError, OSError) as e:
        print(e, file=sys.stderr)
        return 1
    stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with stream:
        for line in stream:
            line = line.rstrip("\n")
            if args.kaldi_text:
                parts = line.split(maxsplit=1)
                if not parts:
                    continue
                text = parts[1] if len(parts) > 1 else ""
                print(f"{parts[0]} {format_line(tok, text, args.output)}".rstrip())
            else:
                print(format_line(tok, line, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
