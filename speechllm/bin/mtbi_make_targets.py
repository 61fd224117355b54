r"""MTBI targets: the frozen LLM's answers to task prompts about each transcript of a data dir.

    python -m speechllm.bin.mtbi_make_targets --data_dir data/train --prompts conf/prompts/full_tasks.yaml \
        --llm Qwen/Qwen2.5-1.5B-Instruct --out dump/mtbi/train/targets.jsonl \
        --splits train --per_utt 4 --seed 0 --device cuda --dtype bfloat16 --batch_size 64

Each utterance of ``DATA_DIR/text`` gets ``--per_utt`` (task, wording) pairs drawn with ``--seed``
(the draw depends on the utterance id only) or ``all`` of them; ``--splits train`` uses only
training wordings of training tasks (the speech model's training data), ``all`` (or ``heldout``)
builds evaluation sets. The LLM answers greedily, the wording with ``{text}`` replaced by the
transcript, through its chat template (``--system_prompt`` optional), at most
``max_new_tokens_base + max_new_tokens_per_word * words`` new tokens.

Writes ``OUT`` (JSONL, one line per pair; fields in ``speechllm/mtbi/targets.py``) and
``OUT.meta.json`` (provenance). Running again with the same settings resumes: ids already in
``OUT`` are skipped, a truncated last line of a killed run is dropped; other settings are an error
unless ``--overwrite``. With ``--nj N --job J`` job J answers the J-th share of the utterances into
``OUT.J`` (resumable the same way); ``--combine N`` then concatenates the complete job files into
``OUT``, identical to a single-process run. See docs/mtbi.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechllm.bin import add_job_arguments, check_job_arguments, exit_on_user_error
from speechllm.data.datadir import read_text
from speechllm.data.fix_datadir import share_of
from speechllm.llm.text_tasks import load_prompt_set
from speechllm.mtbi import targets as T
from speechllm.utils.config import ConfigError
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("mtbi_make_targets")


def _per_utt(value: str) -> int | None:
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {value!r}")
    return n


def _names(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="targets JSONL (job files: OUT.JOB)")
    p.add_argument("--data_dir", type=Path, help="Kaldi data dir; its text is read")
    p.add_argument("--prompts", type=Path, help="prompt-set YAML (speechllm/llm/text_tasks.py format)")
    p.add_argument("--llm", help="the frozen LLM: hub id or local directory")
    p.add_argument("--splits", choices=T.SPLIT_CHOICES, default="train",
                   help="train: training wordings of training tasks; heldout: the others; all: every wording")
    p.add_argument("--per_utt", type=_per_utt, default=4, help="pairs per utterance, or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", type=_names, default=None, help="only these tasks (comma separated)")
    p.add_argument("--exclude_tasks", type=_names, default=None, help="leave out these tasks (comma separated)")
    p.add_argument("--system_prompt", default=None)
    p.add_argument("--max_new_tokens_base", type=int, default=32)
    p.add_argument("--max_new_tokens_per_word", type=float, default=2.0)
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--overwrite", action="store_true", help="start OUT again even if it holds other targets")
    p.add_argument("--log_level", default="INFO")
    add_job_arguments(p)
    return p


def make_targets(args: argparse.Namespace) -> list[dict]:
    """This job's targets file, generated or resumed; returns its records in plan order."""
    import torch

    from speechllm.bin.lm_eval_tasks import greedy_generate
    from speechllm.llm.loading import load_causal_lm, load_tokenizer

    prompts = load_prompt_set(args.prompts)
    eligible = T.eligible_wordings(prompts, args.splits, args.tasks, args.exclude_tasks)
    text_path = args.data_dir / "text"
    text = read_text(text_path)
    if args.nj > 1:
        text = {u: text[u] for u in share_of(list(text), args.nj, args.job)}
    pairs = T.plan_pairs(text, prompts, eligible, args.per_utt, args.seed)
    log.info("%d utterances x %s of %d wordings (%d tasks, splits=%s) -> %d pairs", len(text),
             "all" if args.per_utt is None else args.per_utt, sum(map(len, eligible.values())), len(eligible),
             args.splits, len(pairs))
    model = load_causal_lm(args.llm, torch_dtype=args.dtype).to(args.device).eval()
    tokenizer = load_tokenizer(args.llm)
    out = T.job_path(args.out, args.job) if args.nj > 1 else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = T.provenance(llm=args.llm, llm_fingerprint=T.llm_fingerprint(args.llm, model), prompts=args.prompts,
                        text=text_path, splits=args.splits, tasks=list(eligible), per_utt=args.per_utt,
                        seed=args.seed, system_prompt=args.system_prompt, dtype=args.dtype,
                        max_new_tokens_base=args.max_new_tokens_base,
                        max_new_tokens_per_word=args.max_new_tokens_per_word,
                        job=(args.job, args.nj) if args.nj > 1 else None,
                        run=T.run_info(device=args.device, batch_size=args.batch_size))
    done = T.open_targets(out, meta, args.overwrite)
    system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt is not None else []

    def render(user: str) -> str:
        return tokenizer.apply_chat_template(system + [{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)

    def generate(prompts: list[str], bounds: list[int]) -> list[tuple[str, int, bool]]:
        return greedy_generate(model, tokenizer, prompts, bounds, args.device)

    with torch.inference_mode():
        done = T.generate_targets(pairs, out, done, generate, render, args.batch_size,
                                  args.max_new_tokens_base, args.max_new_tokens_per_word)
    records = T.finalize(out, pairs, done)
    if args.splits == "train":
        T.check_split_leaks(records, prompts, str(out))
    log.info("wrote %s", out)
    return records


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.combine is not None:
        T.log_counts(T.combine_jobs(args.out, args.combine))
        return 0
    check_job_arguments(parser, args, ("data_dir", "prompts", "llm"))
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {args.batch_size}")
    T.log_counts(make_targets(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
