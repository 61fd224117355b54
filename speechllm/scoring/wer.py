"""WER and CER of a hypothesis ``text`` file against a reference ``text`` file.

Both sides go through :func:`speechllm.text.normalizer.normalize_text`, then ``jiwer``
aligns and counts. Nothing is dropped: an utterance without a hypothesis is scored as an
empty hypothesis (all deletions) and listed; empty and looping hypotheses are counted;
hypotheses whose id is not in the reference are reported and left out of the score.

Outputs of :func:`score_dir` in ``out_dir``:

- ``result.json``: numbers (``wer``/``cer``/``ser`` in percent) and the lists of problem ids;
- ``result.txt``: a short Kaldi-style summary (``%WER 4.21 [ 123 / 2920, 10 ins, ... ]``);
- ``per_utt.txt``: per utterance the aligned ref/hyp words, the ops (C/S/D/I) and
  ``#err/#words`` with flags (missing, empty, looping).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

from speechllm.data.datadir import DataDirError, read_text, read_utt2spk
from speechllm.text.normalizer import normalize_text
from speechllm.utils.config import atomic_write_text
from speechllm.utils.git import git_commit

logger = logging.getLogger(__name__)

LOOP_MIN_REPEATS = 4  # an n-gram repeated this many times in a row marks a looping hypothesis
GAP = "***"           # filler for the missing side of an insertion/deletion in per_utt.txt
_OP_CODES = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


def find_loop(words: list[str], min_repeats: int = LOOP_MIN_REPEATS) -> tuple[int, int] | None:
    """First ``(start, n)`` such that ``words[start:start+n]`` repeats ``min_repeats`` times in a
    row, or ``None``. Catches the attention decoder's classic failure ("and the and the and the
    and the ..."); legitimate text almost never repeats an n-gram four times back to back.
    """
    length = len(words)
    for n in range(1, length // min_repeats + 1):
        run = 0  # consecutive positions i with words[i] == words[i - n]
        for i in range(n, length):
            run = run + 1 if words[i] == words[i - n] else 0
            if run >= n * (min_repeats - 1):
                return i - n * min_repeats + 1, n
    return None


def is_looping(words: list[str], min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """True when some n-gram of ``words`` repeats ``min_repeats`` or more times in a row."""
    return find_loop(words, min_repeats) is not None


@dataclass
class UttScore:
    """Alignment and counts of one utterance."""

    utt_id: str
    ref: list[str]
    hyp: list[str]
    ops: list[tuple[str, str, str]] = field(default_factory=list)  # (op, ref word, hyp word)
    missing: bool = False
    looping: bool = False

    @property
    def num_errors(self) -> int:
        return sum(op != "C" for op, _, _ in self.ops)

    @property
    def flags(self) -> list[str]:
        out = []
        if self.missing:
            out.append("missing-hyp")
        elif not self.hyp:
            out.append("empty-hyp")
        if self.looping:
            out.append("looping-hyp")
        return out


def _align(ref: list[str], hyp: list[str], chunks) -> list[tuple[str, str, str]]:
    """Turn jiwer alignment chunks into one (op, ref word, hyp word) per aligned column."""
    ops = []
    for ch in chunks:
        op = _OP_CODES[ch.type]
        if op in "CS":
            for k in range(ch.ref_end_idx - ch.ref_start_idx):
                ops.append((op, ref[ch.ref_start_idx + k], hyp[ch.hyp_start_idx + k]))
        elif op == "D":
            ops.extend(("D", w, GAP) for w in ref[ch.ref_start_idx:ch.ref_end_idx])
        else:
            ops.extend(("I", GAP, w) for w in hyp[ch.hyp_start_idx:ch.hyp_end_idx])
    return ops


def _percent(num: int, den: int) -> float | None:
    return 100.0 * num / den if den else None  # unrounded: RESULTS.md formats, result.json keeps


def score_texts(refs: dict[str, str], hyps: dict[str, str]) -> tuple[dict, list[UttScore]]:
    """Score hypotheses against references (both ``{utt_id: text}``, not yet normalized).

    Returns ``(result, per_utt)``: ``result`` holds the counts and percentages written to
    ``result.json``; ``per_utt`` the alignment of every reference utterance, in id order.
    """
    if not refs:
        raise ValueError("no reference utterances to score")
    ids = sorted(refs)
    ref_norm = [normalize_text(refs[u]) for u in ids]
    missing = [u for u in ids if u not in hyps]
    hyp_norm = [normalize_text(hyps.get(u, "")) for u in ids]
    extra = sorted(set(hyps) - set(refs))

    words = jiwer.process_words(ref_norm, hyp_norm)
    chars = jiwer.process_characters(ref_norm, hyp_norm)

    per_utt = []
    missing_set = set(missing)
    for u, r, h, chunks in zip(ids, words.references, words.hypotheses, words.alignments):
        per_utt.append(UttScore(u, list(r), list(h), _align(r, h, chunks),
                                missing=u in missing_set, looping=is_looping(list(h))))
    empty = [s.utt_id for s in per_utt if not s.hyp and not s.missing]
    looping = [s.utt_id for s in per_utt if s.looping]

    num_ref_words = sum(len(r) for r in words.references)
    num_ref_chars = chars.hits + chars.substitutions + chars.deletions
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    result = {
        "wer": _percent(word_errors, num_ref_words),
        "cer": _percent(char_errors, num_ref_chars),
        "ser": _percent(sum(s.num_errors > 0 for s in per_utt), len(per_utt)),
        "num_utts": len(ids),
        "num_ref_words": num_ref_words,
        "num_ref_chars": num_ref_chars,
        "word_errors": word_errors,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "char_errors": char_errors,
        "char_substitutions": chars.substitutions,
        "char_deletions": chars.deletions,
        "char_insertions": chars.insertions,
        "num_missing_hyp": len(missing),
        "num_empty_hyp": len(empty),
        "num_looping_hyp": len(looping),
        "num_extra_hyp": len(extra),
        "missing_hyp_utts": missing,
        "empty_hyp_utts": empty,
        "looping_hyp_utts": looping,
        "extra_hyp_utts": extra,
        "normalizer": "speechllm.text.normalizer.normalize_text",
    }
    return result, per_utt


def format_per_utt(scores: list[UttScore]) -> str:
    """Kaldi ``per_utt``-style lines: aligned ``ref``/``hyp``/``op`` rows and ``#err`` per utterance."""
    lines = []
    for s in scores:
        cols = s.ops or [("C", "", "")]
        widths = [max(len(r), len(h), 1) for _, r, h in cols]
        ref_row = " ".join(r.ljust(w) for (_, r, _), w in zip(cols, widths)).rstrip()
        hyp_row = " ".join(h.ljust(w) for (_, _, h), w in zip(cols, widths)).rstrip()
        op_row = " ".join(op.ljust(w) for (op, _, _), w in zip(cols, widths)).rstrip() if s.ops else ""
        counts = {k: sum(op == k for op, _, _ in s.ops) for k in "CSDI"}
        flags = (" " + " ".join(s.flags)) if s.flags else ""
        lines += [
            f"{s.utt_id} ref  {ref_row}",
            f"{s.utt_id} hyp  {hyp_row}",
            f"{s.utt_id} op   {op_row}",
            f"{s.utt_id} #err {s.num_errors}/{len(s.ref)} (C={counts['C']} S={counts['S']} "
            f"D={counts['D']} I={counts['I']}){flags}",
        ]
    return "".join(line.rstrip() + "\n" for line in lines)


def format_summary(result: dict) -> str:
    """The short ``result.txt``: %WER/%CER lines as Kaldi prints them, plus the problem counts."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    name = result.get("data_set", "")
    return (
        f"%WER {pct(result['wer'])} [ {result['word_errors']} / {result['num_ref_words']}, "
        f"{result['insertions']} ins, {result['deletions']} del, {result['substitutions']} sub ] {name}\n"
        f"%CER {pct(result['cer'])} [ {result['char_errors']} / {result['num_ref_chars']}, "
        f"{result['char_insertions']} ins, {result['char_deletions']} del, "
        f"{result['char_substitutions']} sub ] {name}\n"
        f"%SER {pct(result['ser'])} of {result['num_utts']} utterances\n"
        f"hypotheses: {result['num_missing_hyp']} missing (scored as deletions), "
        f"{result['num_empty_hyp']} empty, {result['num_looping_hyp']} looping, "
        f"{result['num_extra_hyp']} without reference (not scored)"
        + (f", {result['num_truncated_hyp']} cut at the length bound" if "num_truncated_hyp" in result else "")
        + "\n"
        + "".join(f"%WER {pct(v['wer'])} [ {v['word_errors']} / {v['num_ref_words']} ] %CER {pct(v['cer'])} "
                  f"speaker {spk} ({v['num_utts']} utterances)\n"
                  for spk, v in result.get("per_speaker", {}).items())
    )


NO_SPEAKER = "(no speaker)"


def per_speaker_scores(per_utt: list[UttScore], utt2spk: dict[str, str]) -> dict[str, dict]:
    """WER/CER per speaker ``{spk: {wer, cer, num_utts, num_ref_words, word_errors}}`` from the
    already normalized and aligned ``per_utt``, speakers sorted; utterances that ``utt2spk``
    lacks are pooled under :data:`NO_SPEAKER`."""
    groups: dict[str, list[UttScore]] = {}
    for s in per_utt:
        groups.setdefault(utt2spk.get(s.utt_id, NO_SPEAKER), []).append(s)
    out = {}
    for spk in sorted(groups):
        utts = groups[spk]
        ref_words = sum(len(s.ref) for s in utts)
        errors = sum(s.num_errors for s in utts)
        chars = jiwer.process_characters([" ".join(s.ref) for s in utts], [" ".join(s.hyp) for s in utts])
        char_ref = chars.hits + chars.substitutions + chars.deletions
        out[spk] = {"wer": _percent(errors, ref_words),
                    "cer": _percent(chars.substitutions + chars.deletions + chars.insertions, char_ref),
                    "num_utts": len(utts), "num_ref_words": ref_words, "word_errors": errors}
    return out


def read_gen_info(path: str | os.PathLike) -> dict[str, tuple[int, bool]]:
    """``gen_info`` of a generative decoder: ``utt_id num_new_tokens stopped`` per line (stopped 1
    when generation ended with a stop token, 0 when it hit its length bound)."""
    out: dict[str, tuple[int, bool]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ("0", "1"):
                raise DataDirError(path, lineno, f"expected 'utt_id num_new_tokens stopped(0|1)', got {line.strip()!r}")
            if parts[0] in out:
                raise DataDirError(path, lineno, f"duplicate utterance id '{parts[0]}'")
            out[parts[0]] = (int(parts[1]), parts[2] == "1")
    return out


def score_dir(ref_text_path: str | os.PathLike, hyp_text_path: str | os.PathLike,
              out_dir: str | os.PathLike, gen_info_path: str | os.PathLike | None = None) -> dict:
    """Score a hypothesis ``text`` file against a reference ``text`` file; write the reports.

    Args:
        ref_text_path: Kaldi ``text`` (``utt-id words...``); its parent dir names the data set.
        hyp_text_path: decoder output in the same format; a line with only the id is an empty
            hypothesis, an id absent from the file a missing one.
        out_dir: receives ``result.json``, ``result.txt`` and ``per_utt.txt``.
        gen_info_path: optional :func:`read_gen_info` file of a generative decoder; adds the
            count (and ids) of outputs cut at the length bound (``num_truncated_hyp``).

    When the reference's data dir has an ``utt2spk``, ``result.json`` also holds ``per_speaker``
    (:func:`per_speaker_scores`) and ``result.txt`` a line per speaker.

    Returns:
        The dict written to ``result.json``.

    Raises:
        DataDirError: a malformed line (duplicate id, bad UTF-8, blank line) in either file.
    """
    ref_text_path, hyp_text_path, out_dir = Path(ref_text_path), Path(hyp_text_path), Path(out_dir)
    refs = read_text(ref_text_path)
    hyps = read_text(hyp_text_path)
    result, per_utt = score_texts(refs, hyps)
    if gen_info_path is not None:
        info = read_gen_info(gen_info_path)
        truncated = sorted(u for u, (_, stopped) in info.items() if not stopped and u in refs)
        result["num_truncated_hyp"] = len(truncated)
        result["truncated_hyp_utts"] = truncated
    utt2spk_path = ref_text_path.parent / "utt2spk"
    if utt2spk_path.is_file():
        result["per_speaker"] = per_speaker_scores(per_utt, read_utt2spk(utt2spk_path))
    result = {
        "data_set": ref_text_path.parent.name,
        "ref": str(ref_text_path),
        "hyp": str(hyp_text_path),
        **result,
        "commit": git_commit(Path(__file__).parent),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "per_utt.txt", format_per_utt(per_utt))
    atomic_write_text(out_dir / "result.txt", format_summary(result))
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if result["num_missing_hyp"] or result["num_extra_hyp"]:
        logger.warning("%s: %d of %d utterances have no hypothesis (scored as all deletions); "
                       "%d hypotheses have no reference (not scored); lists in %s",
                       hyp_text_path, result["num_missing_hyp"], result["num_utts"],
                       result["num_extra_hyp"], out_dir / "result.json")
    return result
