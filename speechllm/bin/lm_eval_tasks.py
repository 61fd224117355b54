"""Per-task exact-match accuracy of a causal LM on instruction examples (greedy decoding).

    python -m speechllm.bin.lm_eval_tasks --model_dir exp/lm_pretrain/hf \\
        --eval_jsonl data/lm/eval.jsonl --out_dir exp/lm_pretrain/eval

Each chat example of the JSONL (``lm_prepare_data`` format) is asked without its answer
(chat template with the generation prompt), batched with left padding through
``model.generate`` (greedy, stops at the eos token); the output is compared with the answer by
``text_tasks.exact_match`` for the example's ``answer_task``. Writes into ``OUT_DIR``:

- ``results.json``: per task accuracy and count, split into train/held-out wordings, per wording;
  for the sentence-long answers (``WER_TASKS``) also the word error rate (after
  ``normalize_text``, so case is ignored), which shows how close a model that is not yet exact
  comes; the macro average of the accuracies over tasks;
- ``results.md``: the same as a markdown table;
- ``hyps.jsonl``: every example's prompt, reference, output and whether it matched.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from speechllm.bin import exit_on_user_error
from speechllm.llm.text_tasks import exact_match
from speechllm.text.normalizer import normalize_text
from speechllm.utils.config import ConfigError, atomic_write_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("lm_eval_tasks")

# Answer tasks whose answers are whole sentences: scored by WER besides exact match.
WER_TASKS = ("repeat", "continue", "uppercase")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="AutoModelForCausalLM + AutoTokenizer directory")
    p.add_argument("--eval_jsonl", required=True)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_new_tokens", type=int, default=96,
                   help="upper bound; a batch stops 8 tokens after its longest reference answer")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples (quick checks)")
    return p


def load_examples(path: str, limit: int | None) -> list[dict]:
    from speechllm.tasks.lm import read_jsonl

    examples = [ex for ex in read_jsonl(path) if ex["kind"] == "chat"]
    for ex in examples:
        if ex["messages"][-1]["role"] != "assistant" or "answer_task" not in ex:
            raise ConfigError(f"{path}: example {ex.get('id')}: needs 'answer_task' and an assistant answer last")
    if not examples:
        raise ConfigError(f"{path}: no chat examples")
    return examples[:limit] if limit else examples


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: list[int], device: str,
                    stop_ids: list[int] | None = None) -> list[tuple[str, int, bool]]:
    """Greedy answers to one batch of rendered chat prompts (left padded, one ``generate`` call).

    Per prompt: the answer text (stop tokens dropped, stripped), its number of new tokens, and
    whether it ended at a stop token (False: cut at its own ``max_new_tokens``). ``stop_ids``
    default to :func:`speechllm.llm.prompting.stop_token_ids`. Every option is set explicitly, so
    a checkpoint's ``generation_config.json`` (an instruct model's sampling or repetition penalty)
    does not apply. The tokenizer needs a pad token (``load_tokenizer`` gives it one).
    """
    from transformers import GenerationConfig

    from speechllm.llm.prompting import stop_token_ids

    stops = list(stop_ids) if stop_ids else stop_token_ids(tokenizer)
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
    gen = GenerationConfig(max_new_tokens=max(max(max_new_tokens), 1), do_sample=False, num_beams=1,
                           temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, eos_token_id=stops,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    rows = model.generate(**enc, generation_config=gen)[:, enc["input_ids"].shape[1]:].tolist()
    out = []
    for row, limit in zip(rows, max_new_tokens):
        row = row[:limit]
        end = next((i for i, t in enumerate(row) if t in stops), None)
        ids = row if end is None else row[:end]
        out.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), end is not None))
    return out


def generate_answers(model, tokenizer, examples: list[dict], batch_size: int, max_new_tokens: int,
                     device: str) -> list[str]:
    """Greedy answers, in ``examples`` order. Examples are batched by task (similar lengths)."""
    prompts = tokenizer.apply_chat_template([ex["messages"][:-1] for ex in examples], tokenize=False,
                                            add_generation_prompt=True)
    ref_lens = [len(tokenizer(ex["messages"][-1]["content"], add_special_tokens=False).input_ids) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: (examples[i]["task"], ref_lens[i]))
    out: list[str] = [""] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not sys.stderr.isatty()):
        idx = order[start:start + batch_size]
        limit = min(max_new_tokens, max(ref_lens[i] for i in idx) + 8)
        answers = greedy_generate(model, tokenizer, [prompts[i] for i in idx], [limit] * len(idx), device)
        for i, (text, _, _) in zip(idx, answers):
            out[i] = text
    return out


def _acc(flags: list[bool]) -> dict:
    return {"acc": sum(flags) / len(flags) if flags else None, "n": len(flags)}


def summarize(examples: list[dict], hyps: list[str]) -> tuple[dict, list[dict]]:
    """``results.json`` content and one record per example."""
    records = []
    by_task: dict[str, list[dict]] = defaultdict(list)
    for ex, hyp in zip(examples, hyps):
        ref = ex["messages"][-1]["content"]
        rec = {"id": ex["id"], "task": ex["task"], "answer_task": ex["answer_task"], "wording": ex.get("wording"),
               "split": ex.get("split", "train"), "prompt": ex["messages"][-2]["content"], "ref": ref, "hyp": hyp,
               "correct": exact_match(ex["answer_task"], hyp, ref)}
        records.append(rec)
        by_task[rec["task"]].append(rec)
    tasks = {}
    for task, recs in sorted(by_task.items()):
        wer = None
        if recs[0]["answer_task"] in WER_TASKS:
            import jiwer

            wer = 100 * jiwer.wer([normalize_text(r["ref"]) for r in recs],
                                  [normalize_text(r["hyp"]) for r in recs])
        wordings: dict[str, list[bool]] = defaultdict(list)
        for r in recs:
            wordings[r["wording"]].append(r["correct"])
        tasks[task] = {
            **_acc([r["correct"] for r in recs]),
            "answer_task": recs[0]["answer_task"],
            "wer": wer,
            "by_split": {s: _acc([r["correct"] for r in recs if r["split"] == s])
                         for s in ("train", "heldout") if any(r["split"] == s for r in recs)},
            "by_wording": {w: _acc(f) for w, f in sorted(wordings.items(), key=lambda kv: str(kv[0]))},
        }
    accs = [t["acc"] for t in tasks.values()]
    return {"macro_acc": sum(accs) / len(accs), "n": len(records), "tasks": tasks}, records


def markdown_table(results: dict, title: str) -> str:
    def pct(d: dict | None) -> str:
        return "–" if not d or d["acc"] is None else f"{100 * d['acc']:.1f} ({d['n']})"

    lines = [f"# {title}", "", "Exact match in % (number of examples); word error rate in % for sentence answers.", "",
             "| task | all | train wordings | held-out wordings | WER |", "|---|---|---|---|---|"]
    for task, t in results["tasks"].items():
        wer = "" if t.get("wer") is None else f"{t['wer']:.1f}"
        lines.append(f"| {task} | {pct(t)} | {pct(t['by_split'].get('train'))} | "
                     f"{pct(t['by_split'].get('heldout'))} | {wer} |")
    lines.append(f"| **macro average** | {100 * results['macro_acc']:.1f} ({results['n']}) | | | |")
    return "\n".join(lines) + "\n"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(args.model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{args.model_dir}/config.json: not a model directory (speechllm.bin.lm_export)")
    examples = load_examples(args.eval_jsonl, args.limit)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir).to(args.device).eval()
    t0 = time.time()
    hyps = generate_answers(model, tokenizer, examples, args.batch_size, args.max_new_tokens, args.device)
    results, records = summarize(examples, hyps)
    results.update({"model_dir": str(args.model_dir), "eval_jsonl": str(args.eval_jsonl),
                    "seconds": round(time.time() - t0, 1)})
    out = Path(args.out_dir)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "hyps.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(out / "results.md", markdown_table(results, f"{args.model_dir} on {args.eval_jsonl}"))
    log.info("%d examples in %.1f s; macro accuracy %.1f%%: %s", len(records), results["seconds"],
             100 * results["macro_acc"],
             ", ".join(f"{t} {100 * r['acc']:.1f}" for t, r in results["tasks"].items()))
    log.info("wrote %s/results.json, results.md, hyps.jsonl", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
