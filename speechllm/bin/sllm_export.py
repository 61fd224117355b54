r"""Export a trained speech LLM as one standalone directory, with LoRA merged into the LLM.

    python -m speechllm.bin.sllm_export --exp_dir exp/sllm_x --checkpoint exp/sllm_x/valid.acc.ave.pt \
        --out_dir exp/sllm_x/export

Writes ``out_dir/llm/`` (the merged LLM and its tokenizer, ``save_pretrained``), ``speech.pt``
(encoder and projector weights), ``config.yaml`` and, for fbank models, ``cmvn.json``
(:func:`speechllm.llm.adapters.merge_and_export`). ``sllm_inference --model_dir out_dir`` decodes
with it; ``out_dir/llm`` alone is an ordinary ``transformers`` model directory.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechllm.bin import exit_on_user_error
from speechllm.bin.sllm_inference import load_model
from speechllm.llm.adapters import merge_and_export
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", type=Path, required=True, help="training experiment dir (its config.yaml)")
    p.add_argument("--checkpoint", type=Path, required=True, help="trainable weights (Trainer checkpoint)")
    p.add_argument("--out_dir", type=Path, required=True, help="the export directory")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Load, merge, write; 1 with a one-line message on bad input."""
    args = get_parser().parse_args(argv)
    setup_logging()
    model, config = load_model(argparse.Namespace(model_dir=None, exp_dir=args.exp_dir, checkpoint=args.checkpoint))
    out = merge_and_export(model, args.out_dir, config=config)
    log.info("exported %s (+ %s) to %s", args.exp_dir, args.checkpoint, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
