"""The MTBI benchmark: score a speech model's answers to task prompts against the frozen text
LLM's answers (and the true answers) of a targets JSONL; definitions in docs/mtbi.md.

A *targets* file has one JSON object a line, one example = one utterance x one prompt wording::

    {"id": "utt1|count_words/2", "utt_id": "utt1", "task": "count_words", "answer_task": "count_words",
     "wording": "count_words/2", "wording_split": "train", "task_split": "train",
     "prompt": "Count the words: {text}", "transcript": "and god said", "response": "3",
     "reference": "3", "stopped": true}

``response`` is the text LLM's answer given the transcript (what the speech model imitates),
``reference`` the true answer (``null`` when unknown), ``stopped`` whether the LLM ended its answer
itself. Hypotheses are a Kaldi-style ``text`` file keyed by ``id`` (``sllm_inference
--prompts_jsonl``), optionally with its ``gen_info``.

Every rate is in percent; a rate with an empty denominator is ``None``. Answers are compared
after :func:`speechllm.text.normalizer.normalize_text`, by the rules of
:func:`speechllm.llm.text_tasks.exact_match` for the example's ``answer_task``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import jiwer
import numpy as np

from speechllm.data.datadir import DataDirError
from speechllm.llm.text_tasks import SPLITS, exact_match
from speechllm.mtbi.targets import read_targets
from speechllm.scoring.wer import is_looping
from speechllm.text.normalizer import normalize_text

TARGET_KEYS = ("id", "utt_id", "task", "answer_task", "wording", "wording_split", "task_split", "prompt",
               "transcript", "response", "reference")
# Answer tasks whose answer is the transcript: scored by WER against the transcript.
TRANSCRIPTION_ANSWER_TASKS = ("repeat",)
# Resamples of the bootstrap behind the accuracy intervals (fixed seed: rescoring gives the same).
BOOTSTRAP_SAMPLES = 2000
# An output is "a transcription" when its WER against the transcript is at most this (percent).
TRANSCRIPTION_MAX_WER = 50.0
# Refusal-like outputs (searched in the normalized output: lowercase, punctuation removed).
REFUSAL_PATTERNS = (
    r"\bi cannot\b", r"\bi can't\b", r"\bi can not\b", r"\bi'm unable\b", r"\bi am unable\b",
    r"\bi'm not able\b", r"\bi am not able\b", r"\bsorry\b", r"\bi apologi[sz]e\b", r"\bas an ai\b",
    r"\bas a language model\b", r"\bi don't know\b", r"\bi do not know\b", r"\bunable to\b",
)
_REFUSAL_RES = [re.compile(p) for p in REFUSAL_PATTERNS]
_INT_RE = re.compile(r"[-+]?\d+")


@dataclass(frozen=True)
class Target:
    """One line of a targets JSONL (the keys of the module docstring)."""

    id: str
    utt_id: str
    task: str
    answer_task: str
    wording: str
    wording_split: str
    task_split: str
    prompt: str
    transcript: str
    response: str
    reference: str | None
    stopped: bool = True

    @property
    def is_transcription_task(self) -> bool:
        return self.answer_task in TRANSCRIPTION_ANSWER_TASKS


def load_targets(path: str | os.PathLike) -> list[Target]:
    """The examples of a targets JSONL as :class:`Target` (splits checked)."""
    targets = []
    for obj in read_targets(path, required=TARGET_KEYS, allow_empty=False):
        for key in ("wording_split", "task_split"):
            if obj[key] not in SPLITS:
                raise DataDirError(path, None, f"id '{obj['id']}': {key} must be one of {list(SPLITS)}, "
                                               f"got {obj[key]!r}")
        ref = obj["reference"]
        targets.append(Target(**{k: str(obj[k]) for k in TARGET_KEYS if k != "reference"},
                              reference=None if ref is None else str(ref), stopped=bool(obj.get("stopped", True))))
    return targets


# ----------------------------------------------------------------------------------------
# Judging one output
# ----------------------------------------------------------------------------------------
def _first_int(text: str) -> int | None:
    m = _INT_RE.search(text)
    return int(m.group()) if m else None


def _is_upper(text: str) -> bool:
    return any(c.isalpha() for c in text) and text.strip() == text.strip().upper()


def same_answer(answer_task: str, hyp: str, answer: str) -> bool:
    """Whether ``hyp`` gives the same answer as ``answer`` (another model's free output, e.g. the
    LLM's): like :func:`exact_match`, but the rules apply to both sides: for ``count_words`` the
    first integers are equal (normalized text when ``answer`` holds none), for ``uppercase`` the
    words are equal and both or neither are in upper case."""
    if answer_task == "count_words" and _first_int(answer) is not None:
        return _first_int(hyp) == _first_int(answer)
    if answer_task == "uppercase":
        return normalize_text(hyp) == normalize_text(answer) and _is_upper(hyp) == _is_upper(answer)
    return normalize_text(hyp) == normalize_text(answer)


def is_correct(answer_task: str, hyp: str, reference: str) -> bool:
    """``hyp`` against the true answer: :func:`exact_match` (a reference is a clean answer)."""
    return exact_match(answer_task, hyp, reference)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """``(errors, reference words)`` of ``hyp`` against ``ref`` after normalization (jiwer)."""
    ref_n, hyp_n = normalize_text(ref), normalize_text(hyp)
    if not ref_n:
        return len(hyp_n.split()), 0
    out = jiwer.process_words(ref_n, hyp_n)
    return out.substitutions + out.deletions + out.insertions, len(ref_n.split())


def is_transcription(text: str, transcript: str) -> bool:
    """Whether ``text`` is (about) the transcript: both non-empty and WER <= TRANSCRIPTION_MAX_WER."""
    errors, words = word_errors(transcript, text)
    return bool(normalize_text(text)) and words > 0 and 100.0 * errors / words <= TRANSCRIPTION_MAX_WER


def has_answer_form(text: str, answer: str) -> bool:
    """Whether ``text`` has the form of ``answer`` (the LLM's answer to the same prompt given the
    transcript): at most ``max(2n, n + 3)`` words for an ``n``-word answer, and a number where
    the answer holds one. A sentence given for a one-word question, or a loop, has not."""
    n_text, n_answer = len(normalize_text(text).split()), len(normalize_text(answer).split())
    if n_text > max(2 * n_answer, n_answer + 3):
        return False
    return _first_int(answer) is None or _first_int(text) is not None


def words_of(text: str, transcript: str) -> bool:
    """Whether ``text`` is non-empty and every one of its (normalized) words occurs in ``transcript``."""
    words, vocab = normalize_text(text).split(), set(normalize_text(transcript).split())
    return bool(words) and all(w in vocab for w in words)


def is_refusal(text: str, context: Iterable[str] = ()) -> bool:
    """Whether ``text`` matches a :data:`REFUSAL_PATTERNS` entry that none of ``context`` (the
    transcript, the expected answer) matches: a verse reading "i cannot dig" is no refusal."""
    norm, ctx = normalize_text(text), [normalize_text(c) for c in context if c]
    return any(r.search(norm) and not any(r.search(c) for c in ctx) for r in _REFUSAL_RES)


@dataclass
class ItemScore:
    """The judgement of one output (the model's, or the LLM's own in its self-score)."""

    id: str
    utt_id: str
    task: str
    answer_task: str
    wording_split: str
    task_split: str
    hyp: str
    missing: bool
    empty: bool
    looping: bool
    cut: bool | None
    refusal: bool
    word_errors: int          # against the transcript (used for transcription tasks)
    ref_words: int
    agrees: bool | None       # same answer as the LLM (non-transcription tasks; None in the self-score)
    correct: bool | None      # same answer as the reference (None: no reference, or a transcription task)
    if_eligible: bool         # counts for instruction following (see score_item)
    transcribed: bool | None  # eligible and the output is a transcription (of the utterance)
    grounded: bool | None     # extractive example (the LLM answered with words of the transcript):
                              # the output, too, consists of words of the transcript
    follows: bool | None      # eligible, not empty, not transcribed, and in the answer's form

    @property
    def is_transcription_task(self) -> bool:
        return self.answer_task in TRANSCRIPTION_ANSWER_TASKS


def score_item(t: Target, hyp: str | None, cut: bool | None, self_score: bool = False,
               own_transcriptions: Sequence[str] = ()) -> ItemScore:
    """Judge ``hyp`` (None: missing) for ``t``. ``self_score``: ``hyp`` is the LLM's own answer
    (no agreement, no instruction following).

    Instruction following: an example is *eligible* when its task is not a transcription task and
    neither the LLM's answer nor the reference is a transcription (:func:`is_transcription`); it
    is *followed* when the output is non-empty, a transcription neither of the transcript nor of
    any of ``own_transcriptions`` (the model's own answers to the transcription prompts of the
    same utterance: a model that transcribes badly must not count as following because its
    transcript is far from the true one), and in the form of the LLM's answer
    (:func:`has_answer_form`: a hallucinated sentence for a one-word question is no answer).
    """
    text = hyp or ""
    words = normalize_text(text).split()
    errors, ref_words = word_errors(t.transcript, text)
    answer_task = not t.is_transcription_task
    transcribed = bool(words) and any(is_transcription(text, ref) for ref in (t.transcript, *own_transcriptions))
    eligible = (answer_task and not self_score and not is_transcription(t.response, t.transcript)
                and not (t.reference is not None and is_transcription(t.reference, t.transcript)))
    return ItemScore(
        id=t.id, utt_id=t.utt_id, task=t.task, answer_task=t.answer_task, wording_split=t.wording_split,
        task_split=t.task_split,
        hyp=text, missing=hyp is None, empty=hyp is not None and not words, looping=is_looping(words), cut=cut,
        refusal=is_refusal(text, (t.transcript, t.response, t.reference or "")),
        word_errors=errors, ref_words=ref_words,
        agrees=same_answer(t.answer_task, text, t.response) if answer_task and not self_score else None,
        correct=is_correct(t.answer_task, text, t.reference) if answer_task and t.reference is not None else None,
        if_eligible=eligible,
        transcribed=transcribed if eligible else None,
        grounded=(words_of(text, t.transcript) if answer_task and words_of(t.response, t.transcript) else None),
        follows=(bool(words) and not transcribed and has_answer_form(text, t.response)) if eligible else None,
    )


# ----------------------------------------------------------------------------------------
# Groups of examples
# ----------------------------------------------------------------------------------------
def _percent(num: int, den: int) -> float | None:
    return 100.0 * num / den if den else None


def summarize(items: Sequence[ItemScore]) -> dict:
    """The numbers of one group of examples (keys documented in docs/mtbi.md)."""
    trans = [s for s in items if s.is_transcription_task]
    agree = [s.agrees for s in items if s.agrees is not None]
    correct = [s.correct for s in items if s.correct is not None]
    follows = [s.follows for s in items if s.if_eligible]
    grounded = [s.grounded for s in items if s.grounded is not None]
    errors, ref_words = sum(s.word_errors for s in trans), sum(s.ref_words for s in trans)
    known_cut = [s.cut for s in items if s.cut is not None]
    return {
        "num_items": len(items),
        "num_transcription_items": len(trans),
        "wer": _percent(errors, ref_words),
        "word_errors": errors,
        "num_ref_words": ref_words,
        "num_agreement_items": len(agree),
        "agreement": _percent(sum(agree), len(agree)),
        "num_with_reference": len(correct),
        "accuracy": _percent(sum(correct), len(correct)),
        "num_if_eligible": len(follows),
        "instruction_following": _percent(sum(follows), len(follows)),
        "num_extractive": len(grounded),
        "grounding": _percent(sum(grounded), len(grounded)),
        "num_missing": sum(s.missing for s in items),
        "num_empty": sum(s.empty for s in items),
        "num_looping": sum(s.looping for s in items),
        "num_cut": sum(known_cut) if len(known_cut) == len(items) and items else None,
        "num_refusal": sum(s.refusal for s in items),
    }


def _bootstrap_ci95(clusters: Iterable[tuple[str, float]], samples: int, seed: int) -> list[float] | None:
    """Percentile 95% interval of ``100 * sum(values) / count`` over ``(cluster, value)`` pairs,
    resampling whole clusters (None with fewer than 2 clusters)."""
    by_cluster: dict[str, list[float]] = {}
    for key, value in clusters:
        by_cluster.setdefault(key, []).append(value)
    if len(by_cluster) < 2:
        return None
    num = np.array([sum(v) for v in by_cluster.values()], dtype=float)
    den = np.array([len(v) for v in by_cluster.values()], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(num), size=(samples, len(num)))
    low, high = np.percentile(100.0 * num[draws].sum(1) / den[draws].sum(1), [2.5, 97.5])
    return [float(low), float(high)]


def accuracy_ci95(items: Sequence[ItemScore], samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = 0) -> list[float] | None:
    """The 95% interval ``[low, high]`` of the accuracy of ``items`` (percent; None with fewer
    than 2 utterances): percentile bootstrap over utterances, since the examples of one utterance
    share its audio and are not independent draws."""
    return _bootstrap_ci95(((s.utt_id, float(s.correct)) for s in items if s.correct is not None), samples, seed)


def paired_accuracy_difference(base: Iterable[Mapping], other: Iterable[Mapping], task_split: str = "heldout",
                               samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict | None:
    """``other``'s accuracy minus ``base``'s (points) on the examples of ``task_split`` that both
    judged, from two systems' ``per_item.jsonl`` rows, with the 95% interval of a paired bootstrap
    over utterances: both systems answered the same examples, so the interval is much narrower
    than the two systems' own intervals suggest. None when they share no judged example (or the
    rows come from a scoring without ``utt_id``/``task_split``)."""
    def judged(rows: Iterable[Mapping]) -> dict[str, Mapping]:
        return {r["id"]: r for r in rows if r.get("task_split") == task_split and r.get("correct") is not None}

    a, b = judged(base), judged(other)
    pairs = [(a[i]["utt_id"], float(int(b[i]["correct"]) - int(a[i]["correct"]))) for i in sorted(a.keys() & b.keys())]
    if not pairs:
        return None
    return {"difference": 100.0 * sum(d for _, d in pairs) / len(pairs),
            "ci95": _bootstrap_ci95(pairs, samples, seed),
            "num_items": len(pairs), "num_utts": len({u for u, _ in pairs})}


# Keys of a group that mean nothing when the LLM scores its own answers.
_NOT_IN_SELF_SCORE = ("num_agreement_items", "agreement", "num_if_eligible", "instruction_following", "num_missing",
                      "num_extractive", "grounding")


def _groups(scores: Sequence[ItemScore], self_score: bool = False) -> dict:
    """Overall, seen/unseen tasks, seen tasks by seen/unseen wordings, and per task (with its
    seen/unseen wordings) of ``scores``."""
    def group(items: Sequence[ItemScore]) -> dict:
        out = summarize(items)
        return {k: v for k, v in out.items() if k not in _NOT_IN_SELF_SCORE} if self_score else out

    per_task = {}
    for task in dict.fromkeys(s.task for s in scores):
        items = [s for s in scores if s.task == task]
        per_task[task] = {"task_split": items[0].task_split, "answer_task": items[0].answer_task, **group(items),
                          "by_wording_split": {sp: group([s for s in items if s.wording_split == sp])
                                               for sp in SPLITS if any(s.wording_split == sp for s in items)}}
    seen = [s for s in scores if s.task_split == "train"]
    return {
        "overall": group(scores),
        "seen_tasks": group(seen),
        "unseen_tasks": group([s for s in scores if s.task_split == "heldout"]),
        "prompt_generalization": {"seen_wordings": group([s for s in seen if s.wording_split == "train"]),
                                  "unseen_wordings": group([s for s in seen if s.wording_split == "heldout"])},
        "per_task": per_task,
    }


def _instruction_following(scores: Sequence[ItemScore]) -> dict:
    answer_items = [s for s in scores if not s.is_transcription_task]
    eligible = [s for s in answer_items if s.if_eligible]
    return {
        "rate": _percent(sum(bool(s.follows) for s in eligible), len(eligible)),
        "num_eligible": len(eligible),
        "num_followed": sum(bool(s.follows) for s in eligible),
        "num_transcribed": sum(bool(s.transcribed) for s in eligible),
        "num_off_form": sum(not s.follows and not s.transcribed and not s.empty and not s.missing for s in eligible),
        "num_empty_or_missing": sum(s.empty or s.missing for s in eligible),
        "num_excluded": len(answer_items) - len(eligible),
        "seen_tasks": _percent(sum(bool(s.follows) for s in eligible if s.task_split == "train"),
                               sum(s.task_split == "train" for s in eligible)),
        "unseen_tasks": _percent(sum(bool(s.follows) for s in eligible if s.task_split == "heldout"),
                                 sum(s.task_split == "heldout" for s in eligible)),
    }


def score_targets(targets: Sequence[Target], hyps: dict[str, str],
                  gen_info: dict[str, tuple[int, bool]] | None = None) -> tuple[dict, list[ItemScore]]:
    """Score hypotheses ``{id: text}`` (and ``gen_info`` ``{id: (new_tokens, stopped)}``) against
    ``targets``; returns the ``result.json`` dict (without file names) and the per-example scores."""
    if not targets:
        raise ValueError("no targets to score")
    # The model's own transcriptions of each utterance (its answers to the transcription prompts).
    own: dict[str, list[str]] = {}
    for t in targets:
        if t.is_transcription_task and hyps.get(t.id):
            own.setdefault(t.utt_id, []).append(hyps[t.id])
    scores = [score_item(t, hyps.get(t.id), None if gen_info is None else not gen_info.get(t.id, (0, True))[1],
                         own_transcriptions=own.get(t.utt_id, ())) for t in targets]
    llm_scores = [score_item(t, t.response, not t.stopped, self_score=True) for t in targets]
    groups = _groups(scores)
    known = {t.id for t in targets}
    problems = {k: [s.id for s in scores if getattr(s, k)] for k in ("missing", "empty", "looping", "cut", "refusal")}
    problems["extra"] = sorted(set(hyps) - known)
    result = {
        "num_items": len(targets),
        "num_utts": len({t.utt_id for t in targets}),
        "seen_tasks": sorted({t.task for t in targets if t.task_split == "train"}),
        "unseen_tasks": sorted({t.task for t in targets if t.task_split == "heldout"}),
        "overall": groups["overall"],
        "prompt_generalization": groups["prompt_generalization"],
        "instruction_following": _instruction_following(scores),
        "task_generalization": {
            split: groups[split] | {"accuracy_ci95": accuracy_ci95([s for s in scores if s.task_split == ts])}
            for split, ts in (("seen_tasks", "train"), ("unseen_tasks", "heldout"))},
        "per_task": groups["per_task"],
        "counts": {k: len(v) for k, v in problems.items()} | {"cut": len(problems["cut"]) if gen_info else None},
        "problem_ids": problems,
        "llm": _groups(llm_scores, self_score=True),
        "definitions": {
            "rates": "percent",
            "transcription_answer_tasks": list(TRANSCRIPTION_ANSWER_TASKS),
            "transcription_max_wer": TRANSCRIPTION_MAX_WER,
            "answer_form": "at most max(2n, n+3) words for an n-word LLM answer; a number where it has one",
            "refusal_patterns": list(REFUSAL_PATTERNS),
            "normalizer": "speechllm.text.normalizer.normalize_text",
        },
    }
    return result, scores


def per_item_lines(targets: Sequence[Target], scores: Sequence[ItemScore]) -> str:
    """``per_item.jsonl``: per example its output, the LLM's answer, the reference and the judgement."""
    lines = []
    for t, s in zip(targets, scores):
        flags = [k for k in ("missing", "empty", "looping", "cut", "refusal") if getattr(s, k)]
        row = {"id": t.id, "utt_id": t.utt_id, "task": t.task, "task_split": t.task_split, "wording": t.wording,
               "hyp": s.hyp, "response": t.response,
               "reference": t.reference, "transcript": t.transcript, "agrees": s.agrees, "correct": s.correct,
               "wer": _percent(s.word_errors, s.ref_words) if s.is_transcription_task else None,
               "if_eligible": s.if_eligible, "transcribed": s.transcribed, "follows": s.follows, "grounded": s.grounded, "flags": flags}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(lines)


# ----------------------------------------------------------------------------------------
# The readable summary
# ----------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def _task_rows(per_task: dict, self_score: bool = False) -> list[list[object]]:
    rows = []
    for task, g in per_task.items():
        row = [task, "seen" if g["task_split"] == "train" else "unseen", g["num_items"], _pct(g["wer"])]
        if not self_score:
            row += [_pct(g["agreement"])]
        row += [_pct(g["accuracy"])]
        if not self_score:
            row += [_pct(g["instruction_following"])]
        row += [g["num_empty"], g["num_looping"], "-" if g["num_cut"] is None else g["num_cut"], g["num_refusal"]]
        rows.append(row)
    return rows


def format_interval(ci: Sequence[float] | None) -> str:
    """``low-high`` of an ``accuracy_ci95`` (``-`` when absent: too few utterances, or a result of
    an older scoring)."""
    return "-" if ci is None else f"{_pct(ci[0])}-{_pct(ci[1])}"


def format_summary(result: dict) -> str:
    """``summary.txt``: the benchmark's numbers as a reader wants them (all from ``result``)."""
    pg, ifr, tg = result["prompt_generalization"], result["instruction_following"], result["task_generalization"]
    out = [f"MTBI benchmark {result.get('data_set', '')}: {result['num_items']} examples of "
           f"{result['num_utts']} utterances; seen tasks {', '.join(result['seen_tasks']) or '-'}; "
           f"unseen tasks {', '.join(result['unseen_tasks']) or '-'}. Rates in percent.", "",
           "Prompt generalization (seen tasks):"]
    out += _table(["", "seen wordings", "unseen wordings"], [
        ["WER, transcription tasks", _pct(pg["seen_wordings"]["wer"]), _pct(pg["unseen_wordings"]["wer"])],
        ["agreement with the LLM, other tasks", _pct(pg["seen_wordings"]["agreement"]),
         _pct(pg["unseen_wordings"]["agreement"])],
    ])
    out += ["", f"Instruction following: {_pct(ifr['rate'])} ({ifr['num_followed']} of {ifr['num_eligible']} "
                f"eligible answers; {ifr['num_transcribed']} transcribed, {ifr['num_off_form']} not in the answer's "
                f"form, {ifr['num_empty_or_missing']} empty or "
                f"missing; {ifr['num_excluded']} excluded: the LLM's answer or the reference is a transcription); "
                f"seen tasks {_pct(ifr['seen_tasks'])}, unseen tasks {_pct(ifr['unseen_tasks'])}", "",
            "Task generalization:"]
    out += _table(["", "seen tasks", "unseen tasks"], [
        ["agreement with the LLM", _pct(tg["seen_tasks"]["agreement"]), _pct(tg["unseen_tasks"]["agreement"])],
        ["accuracy (reference)", _pct(tg["seen_tasks"]["accuracy"]), _pct(tg["unseen_tasks"]["accuracy"])],
        ["accuracy, 95% interval", format_interval(tg["seen_tasks"].get("accuracy_ci95")),
         format_interval(tg["unseen_tasks"].get("accuracy_ci95"))],
        ["grounded (extractive examples)", _pct(tg["seen_tasks"]["grounding"]), _pct(tg["unseen_tasks"]["grounding"])],
    ])
    out += ["", "Per task (WER: transcription tasks, against the transcript; accuracy: against the reference):"]
    out += _table(["task", "tasks", "items", "WER", "agreement", "accuracy", "instr.follow", "empty", "looping",
                   "cut", "refusal"], _task_rows(result["per_task"]))
    c = result["counts"]
    out += ["", f"Outputs: {c['missing']} missing, {c['empty']} empty, {c['looping']} looping, "
                f"{'-' if c['cut'] is None else c['cut']} cut at the length bound, {c['refusal']} refusal-like, "
                f"{c['extra']} without a target (not scored)", "",
            "Text LLM on the transcripts, against the references (upper bound):"]
    out += _table(["task", "tasks", "items", "WER", "accuracy", "empty", "looping", "cut", "refusal"],
                  _task_rows(result["llm"]["per_task"], self_score=True))
    llm = result["llm"]
    out += [f"  overall accuracy {_pct(llm['overall']['accuracy'])} (seen tasks {_pct(llm['seen_tasks']['accuracy'])}, "
            f"unseen tasks {_pct(llm['unseen_tasks']['accuracy'])}), transcription WER {_pct(llm['overall']['wer'])}"]
    return "\n".join(out) + "\n"


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
