"""Training data and tokenizer for the mini LM: KJV plain text + text-task instructions.

    python -m speechllm.bin.lm_prepare_data --prompts conf/prompts/mini_tasks.yaml \\
        --exclude ../asr1/data/dev/text ../asr1/data/test/text --out_dir data/lm

Writes into ``OUT_DIR``:

- ``train.jsonl``: plain-text chunks (consecutive verses of the whole KJV, normalized like the
  transcripts, joined by spaces into chunks of about ``--chunk_words`` words, never across
  books; ``--max_plain_chunks`` of them) and instruction examples (``--tasks_per_sentence``
  tasks per training sentence, tasks balanced, a random wording each) as chat turns, plus
  ``--scrambled_per_sentence`` examples per sentence on its words in random order (tasks that
  need no context): a tiny LM otherwise answers ``repeat`` from remembered verse text instead of
  reading the prompt, and the speech LLM will hand it ASR output, which is not verse text
  either. Format in :mod:`speechllm.tasks.lm`. The defaults make ~1.15 M tokens, the size
  ``egs/mini_synth/sllm1/conf/lm_pretrain.yaml`` is timed for.
- ``valid.jsonl``: a few plain chunks and instruction examples on validation sentences (for the
  Trainer's validation loss and model selection).
- ``eval.jsonl``: every task on ``--num_eval`` unseen sentences (wordings in turn, so each
  wording is asked about equally often), for ``lm_eval_tasks``; ``eval_seen.jsonl``: the same
  on ``--num_eval_seen`` training sentences (what the model fits, e.g. ``continue``, which can
  only be known by heart).
- ``tokenizer/``: byte-level BPE trained on ``train.jsonl`` (``speechllm.llm.mini_lm``).
- ``prep_info.yaml``: settings and counts.

Withheld verses: every verse of the ``--exclude`` files (Kaldi ``text`` of the speech dev/test
sets; utterance ids end with the verse, ``<voice>-John001_037``, and a transcript equal to a
verse's also withholds it) and the validation/eval sentences appear nowhere in the training
data: not in plain text, not as instruction sentences, and not as the answer of ``continue``.

Instruction sentences come from the speech corpus's verse pool (``--books``, ``--min_words``,
``--max_words``; the defaults of ``egs/mini_synth/asr1/local/make_corpus.py``).

Held-out prompts: by default (``--include_heldout true``) the LM is trained on ALL tasks and
wordings of the prompt file. The ``heldout`` split belongs to the speech model (MTBI): a
wording or task held out of *its* training must still be answered by the frozen LLM, whose
answers are what the speech model imitates and is compared with. ``--include_heldout false``
trains on the ``train`` split only (to study text-only generalization to unseen wordings);
``eval.jsonl`` always covers every task and wording.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import Counter
from pathlib import Path

import yaml

from speechllm.bin import exit_on_user_error
from speechllm.corpus.kjv_text import DEFAULT_BOOKS, WHOLE_BIBLE, Verse, dump_kjv, filter_verses, read_exclusions
from speechllm.llm.text_tasks import BOOK_NAMES, PromptSet, TaskContext, TaskUnavailable, Wording, load_prompt_set
from speechllm.utils.config import ConfigError, atomic_write_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("lm_prepare_data")


def _bool(text: str) -> bool:
    value = yaml.safe_load(text)
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="prompt file (tasks and wordings)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--exclude", nargs="*", default=[], help="Kaldi text files whose verses are withheld")
    p.add_argument("--include_heldout", type=_bool, default=True,
                   help="train on held-out tasks/wordings too (default true, see above)")
    p.add_argument("--books", default=",".join(DEFAULT_BOOKS), help="books of the instruction sentences")
    p.add_argument("--min_words", type=int, default=5)
    p.add_argument("--max_words", type=int, default=18)
    p.add_argument("--tasks_per_sentence", type=int, default=6, help="instruction examples per training sentence")
    p.add_argument("--chunk_words", type=int, default=160, help="words per plain-text chunk (about 1.15 tokens each)")
    p.add_argument("--max_plain_chunks", type=int, default=1000,
                   help="keep this many plain chunks (seeded sample of ~4,500; -1: all)")
    p.add_argument("--scrambled_per_sentence", type=float, default=2.0,
                   help="extra examples per training sentence on its words in random order (tasks that "
                        "need no context only): copying cannot lean on remembered verses")
    p.add_argument("--num_valid", type=int, default=100, help="validation sentences")
    p.add_argument("--num_valid_chunks", type=int, default=20, help="plain chunks moved to valid.jsonl")
    p.add_argument("--num_eval", type=int, default=200, help="unseen eval sentences (eval.jsonl)")
    p.add_argument("--num_eval_seen", type=int, default=100, help="training sentences in eval_seen.jsonl")
    p.add_argument("--vocab_size", type=int, default=3000, help="BPE vocabulary (special tokens included)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bible_cmd", default="bible")
    return p


def next_verse_map(verses: list[Verse]) -> dict[str, Verse | None]:
    """``id_part`` -> the following verse of the same book (None at a book's end)."""
    out: dict[str, Verse | None] = {}
    for v, nxt in zip(verses, verses[1:] + [None]):
        out[v.id_part] = nxt if nxt is not None and nxt.book == v.book else None
    return out


# ----------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------
def plain_chunks(verses: list[Verse], withheld: set[str], chunk_words: int) -> list[dict]:
    """Consecutive non-withheld verses joined into chunks of >= ``chunk_words`` words (a book's
    last chunk may be shorter); a withheld verse is skipped as if it were not in the text."""
    chunks, words, first = [], [], None
    for i, v in enumerate(verses):
        if v.id_part not in withheld:
            first = first or v
            words.extend(v.words)
        book_ends = i + 1 == len(verses) or verses[i + 1].book != v.book
        if words and (len(words) >= chunk_words or book_ends):
            chunks.append({"id": f"text-{first.id_part}", "kind": "text", "text": " ".join(words)})
            words, first = [], None
    return chunks


def context_of(verse: Verse, nxt: Verse | None, withheld: set[str]) -> TaskContext:
    """The task context of ``verse``; the next verse is hidden when it is withheld."""
    next_text = nxt.transcript if nxt is not None and nxt.id_part not in withheld else None
    return TaskContext(book=BOOK_NAMES.get(verse.book, verse.book), next_text=next_text)


def chat_example(prompts: PromptSet, wording: Wording, verse: Verse, context: TaskContext) -> dict:
    """One instruction example (raises TaskUnavailable when the task has no answer here)."""
    task = prompts.task_of(wording)
    answer = task.answer_for(verse.transcript, context)
    return {
        "id": f"{verse.id_part}-{wording.id}", "kind": "chat", "task": task.name, "answer_task": task.answer,
        "wording": wording.id, "split": wording.split, "ref": verse.ref, "sentence": verse.transcript,
        "messages": [{"role": "user", "content": wording.render(verse.transcript)},
                     {"role": "assistant", "content": answer}],
    }


def instruction_examples(prompts: PromptSet, sentences: list[Verse], nexts: dict, withheld: set[str],
                         wordings: list[Wording], per_sentence: int, rng: random.Random) -> list[dict]:
    """``per_sentence`` examples of distinct tasks per sentence; tasks are dealt from a shuffled
    deck so every task gets about the same count; a task without an answer (``continue`` at a
    book's end or before a withheld verse) is replaced by the next one in the deck."""
    by_task: dict[str, list[Wording]] = {}
    for w in wordings:
        by_task.setdefault(w.task, []).append(w)
    tasks = sorted(by_task)
    per_sentence = min(per_sentence, len(tasks))
    out: list[dict] = []
    deck: list[str] = []  # dealt from the end; a new shuffled deck goes under the old one
    for verse in sentences:
        context = context_of(verse, nexts[verse.id_part], withheld)
        chosen: set[str] = set()
        failed: set[str] = set()
        while len(chosen) < per_sentence and len(chosen) + len(failed) < len(tasks):
            k = next((k for k in range(len(deck) - 1, -1, -1) if deck[k] not in chosen | failed), None)
            if k is None:
                deck = rng.sample(tasks, len(tasks)) + deck
                continue
            task = deck.pop(k)
            try:
                out.append(chat_example(prompts, rng.choice(by_task[task]), verse, context))
                chosen.add(task)
            except TaskUnavailable:
                failed.add(task)
                deck.append(task)  # stays next in line for the following sentence
    return out


def scrambled_examples(prompts: PromptSet, sentences: list[Verse], wordings: list[Wording], per_sentence: float,
                       rng: random.Random) -> list[dict]:
    """About ``per_sentence`` examples per sentence (a fraction: that share of sentences) on the
    sentence's words shuffled, with a random task that needs no context (not ``continue`` or
    ``source_book``). Ids end in ``-scrambled``; ``ref`` is the source verse."""
    usable = [w for w in wordings if _needs_no_context(prompts, w)]
    out = []
    n = int(round(per_sentence * len(sentences)))
    for i in range(n):
        verse = sentences[i % len(sentences)]
        words = verse.words
        shuffled = " ".join(rng.sample(words, len(words)))
        wording = rng.choice(usable)
        task = prompts.task_of(wording)
        out.append({
            "id": f"{verse.id_part}-{wording.id}-scrambled{i // len(sentences) or ''}", "kind": "chat",
            "task": task.name, "answer_task": task.answer, "wording": wording.id, "split": wording.split,
            "ref": verse.ref, "sentence": shuffled, "scrambled": True,
            "messages": [{"role": "user", "content": wording.render(shuffled)},
                         {"role": "assistant", "content": task.answer_for(shuffled, TaskContext())}],
        })
    return out


def _needs_no_context(prompts: PromptSet, wording: Wording) -> bool:
    try:
        prompts.task_of(wording).answer_for("a b c", TaskContext())
        return True
    except TaskUnavailable:
        return False


def eval_examples(prompts: PromptSet, sentences: list[Verse], nexts: dict, withheld: set[str]) -> list[dict]:
    """Every task on every sentence; wording ``i % n`` for sentence ``i`` (all wordings asked)."""
    out = []
    for task in prompts.tasks.values():
        for i, verse in enumerate(sentences):
            try:
                out.append(chat_example(prompts, task.wordings[i % len(task.wordings)], verse,
                                        context_of(verse, nexts[verse.id_part], withheld)))
            except TaskUnavailable:
                pass
    return out


def write_jsonl(path: Path, examples: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples))


def _count(examples: list[dict]) -> dict:
    kinds = Counter(ex["kind"] for ex in examples)
    tasks = Counter(ex["task"] for ex in examples if ex["kind"] == "chat")
    return {"examples": len(examples), "plain_chunks": kinds["text"], "chat": kinds["chat"], "tasks": dict(sorted(tasks.items()))}


# ----------------------------------------------------------------------------------------
def split_sentences(pool: list[Verse], num_eval: int, num_valid: int, rng: random.Random) -> tuple[list[Verse], list[Verse], list[Verse]]:
    """Seeded ``(eval, valid, train)`` sentences, disjoint, independent of the pool's order."""
    if num_eval + num_valid >= len(pool):
        raise ConfigError(f"pool of {len(pool)} sentences too small for {num_eval} eval + {num_valid} valid sentences")
    order = sorted(pool, key=lambda v: (v.book, v.chapter, v.verse))
    rng.shuffle(order)
    return order[:num_eval], order[num_eval:num_eval + num_valid], order[num_eval + num_valid:]


def train_tokenizer_on(train: list[dict], vocab_size: int, out_dir: Path) -> tuple[int, dict]:
    """Train and save the tokenizer on the training texts; returns its size and token counts."""
    from speechllm.llm.mini_lm import train_tokenizer
    from speechllm.tasks.lm import IGNORE_INDEX, tokenize_examples

    texts = [ex["text"] if ex["kind"] == "text" else m["content"] for ex in train
             for m in ([None] if ex["kind"] == "text" else ex["messages"])]
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.save_pretrained(out_dir)
    encoded, _ = tokenize_examples(train, tokenizer, max_len=10**9)
    counts = {
        "tokens": sum(len(ids) for _, ids, _ in encoded),
        "plain_text_tokens": sum(len(ids) for (_, ids, _), ex in zip(encoded, train) if ex["kind"] == "text"),
        "target_tokens": sum(sum(t != IGNORE_INDEX for t in labels) for _, _, labels in encoded),
    }
    return len(tokenizer), counts


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    out_dir = Path(args.out_dir)
    prompts = load_prompt_set(args.prompts)
    wordings = prompts.wordings() if args.include_heldout else prompts.wordings("train")
    log.info("%s: %d tasks, %d wordings (%d held out); training on %d wordings of %d tasks%s",
             args.prompts, len(prompts.tasks), len(prompts.wordings()), len(prompts.wordings("heldout")),
             len(wordings), len({w.task for w in wordings}), "" if args.include_heldout else " (train split only)")

    verses = dump_kjv(WHOLE_BIBLE, bible_cmd=args.bible_cmd)
    nexts = next_verse_map(verses)
    excluded, ex_stats = read_exclusions(args.exclude, verses)
    log.info("withheld %d verses named in %d exclusion file(s) (%d of %d lines matched a verse)",
             len(excluded), len(args.exclude), ex_stats.get("matched", 0), ex_stats.get("lines", 0))
    if ex_stats.get("unmatched"):
        log.warning("%d exclusion lines matched no KJV verse (not from this corpus?)", ex_stats["unmatched"])

    books = [b for b in args.books.split(",") if b]
    pool = [v for v in filter_verses(verses, books, args.min_words, args.max_words) if v.id_part not in excluded]
    rng = random.Random(args.seed)
    eval_s, valid_s, train_s = split_sentences(pool, args.num_eval, args.num_valid, rng)
    withheld = excluded | {v.id_part for v in eval_s + valid_s}
    log.info("sentences (%s, %d-%d words): %d train, %d valid, %d eval (of %d not excluded)", ",".join(books),
             args.min_words, args.max_words, len(train_s), len(valid_s), len(eval_s), len(pool))

    chunks = plain_chunks(verses, withheld, args.chunk_words)
    rng.shuffle(chunks)
    valid_chunks, chunks = chunks[:args.num_valid_chunks], chunks[args.num_valid_chunks:]
    log.info("plain text: %d chunks of ~%d words outside the withheld verses; %d for training, %d for validation",
             len(chunks) + len(valid_chunks), args.chunk_words,
             len(chunks) if args.max_plain_chunks < 0 else min(len(chunks), args.max_plain_chunks), len(valid_chunks))
    if args.max_plain_chunks >= 0:
        chunks = chunks[:args.max_plain_chunks]

    splits = {
        "train": chunks + instruction_examples(prompts, train_s, nexts, withheld, wordings,
                                               args.tasks_per_sentence, rng)
        + scrambled_examples(prompts, train_s, wordings, args.scrambled_per_sentence, rng),
        "valid": valid_chunks + instruction_examples(prompts, valid_s, nexts, withheld, wordings,
                                                     args.tasks_per_sentence, rng),
        "eval": eval_examples(prompts, eval_s, nexts, withheld),
        "eval_seen": eval_examples(prompts, rng.sample(train_s, min(args.num_eval_seen, len(train_s))), nexts,
                                   withheld),
    }
    rng.shuffle(splits["train"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, examples in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", examples)
        c = _count(examples)
        log.info("%s.jsonl: %d examples (%d plain chunks, %d chat: %s)", name, c["examples"], c["plain_chunks"],
                 c["chat"], ", ".join(f"{t} {n}" for t, n in c["tasks"].items()))

    vocab, tokens = train_tokenizer_on(splits["train"], args.vocab_size, out_dir / "tokenizer")
    log.info("tokenizer: %d tokens -> %s/tokenizer; train.jsonl: %s tokens (%s plain text), %s targets", vocab,
             out_dir, f"{tokens['tokens']:,}", f"{tokens['plain_text_tokens']:,}", f"{tokens['target_tokens']:,}")
    info = {
        "settings": vars(args),
        "withheld": {"excluded_verses": len(excluded), "eval_sentences": len(eval_s),
                     "valid_sentences": len(valid_s), "exclusion_lines": ex_stats},
        **{name: _count(examples) for name, examples in splits.items()},
        "vocab_size": vocab,
    }
    info["train"].update(tokens)
    atomic_write_text(out_dir / "prep_info.yaml", yaml.safe_dump(info, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
