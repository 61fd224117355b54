r"""Score the MTBI benchmark: a speech model's answers against the text LLM's (and the true ones).

    python -m speechllm.bin.mtbi_score --targets data/mtbi/test.jsonl \
        --hyp exp/sllm_x/decode_mtbi/test/text --gen_info exp/sllm_x/decode_mtbi/test/gen_info \
        --out_dir exp/sllm_x/decode_mtbi/test/mtbi_score

``--targets`` is the targets JSONL of the test set (``mtbi_make_targets --splits all``), ``--hyp``
the output of ``sllm_inference --prompts_jsonl`` (``text`` keyed by example id; several files,
e.g. ``text.1 text.2``, are read as one). Writes into ``--out_dir``:
  ``result.json``    every number (keys in docs/mtbi.md), read by ``mtbi_table``
  ``summary.txt``    the same, for a reader (also printed)
  ``per_item.jsonl`` per example: output, LLM answer, reference and the judgement
Keep ``--out_dir`` out of ``score/`` dirs: ``write_results`` reads every ``score/result.json`` as a
WER row.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechllm.bin import exit_on_user_error
from speechllm.data.datadir import DataDirError, read_text
from speechllm.mtbi.evaluate import format_summary, load_targets, per_item_lines, score_targets, to_json
from speechllm.scoring.wer import read_gen_info
from speechllm.utils.config import atomic_write_text
from speechllm.utils.git import git_commit
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=Path, required=True, help="targets JSONL of the test set")
    p.add_argument("--hyp", type=Path, nargs="+", required=True, help="hypothesis text file(s), keyed by example id")
    p.add_argument("--gen_info", type=Path, nargs="+", help="gen_info file(s) of the decoding: counts cut outputs")
    p.add_argument("--out_dir", type=Path, required=True, help="where result.json, summary.txt, per_item.jsonl go")
    p.add_argument("--data_set", help="name in the summary (default: the targets file's name up to the first dot)")
    return p


def read_merged(paths: list[Path], reader) -> dict:
    """One ``{id: value}`` of several files read by ``reader``; an id in two files is an error."""
    out: dict = {}
    for path in paths:
        part = reader(path)
        twice = sorted(set(part) & set(out))
        if twice:
            raise DataDirError(path, None, f"id '{twice[0]}' is also in an earlier file ({len(twice)} ids)")
        out.update(part)
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Score and write the reports; 1 with a one-line message on bad input."""
    args = get_parser().parse_args(argv)
    setup_logging()
    targets = load_targets(args.targets)
    hyps = read_merged(args.hyp, read_text)
    gen_info = read_merged(args.gen_info, read_gen_info) if args.gen_info else None
    result, scores = score_targets(targets, hyps, gen_info)
    result = {"data_set": args.data_set or args.targets.name.split(".")[0], "targets": str(args.targets),
              "hyp": [str(p) for p in args.hyp], "gen_info": [str(p) for p in args.gen_info or []],
              **result, "commit": git_commit(Path(__file__).parent)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out_dir / "result.json", to_json(result))
    summary = format_summary(result)
    atomic_write_text(args.out_dir / "summary.txt", summary)
    atomic_write_text(args.out_dir / "per_item.jsonl", per_item_lines(targets, scores))
    sys.stdout.write(summary)
    if result["counts"]["missing"] or result["counts"]["extra"]:
        log.warning("%d of %d examples have no output (scored as empty, wrong); %d outputs have no target; "
                    "ids in %s", result["counts"]["missing"], result["num_items"], result["counts"]["extra"],
                    args.out_dir / "result.json")
    log.info("wrote %s/result.json, summary.txt, per_item.jsonl", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
