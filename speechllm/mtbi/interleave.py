"""Speech-text interleaving for MTBI: some words of a transcript as speech, the others as text.

For one utterance with aligned words (``word_align``, :mod:`speechllm.align`), :func:`interleave`
builds the user turn of a speech-LLM sequence: the prompt wording with its ``{text}`` replaced by
the transcript, where chosen runs of words are replaced by the :data:`AUDIO_PLACEHOLDER` and given
as the encoder frames of the same words instead. It returns the user string and one encoder-frame
span per placeholder, in order; a collate function turns them into the batch's ``prompts``
(``render_prompt_pieces``) and ``audio_spans`` (``(utt_index, start, end)``)::

    words     in  the  beginning  god  created  the  heaven
    speech         [----------]        [-------------]
    user      "Repeat this sentence: in <|audio|> god <|audio|> heaven"
    spans     [(12, 31), (44, 70)]

Why spans of words, not tokens: the text side must read as the LLM's own text, and the LLM's
tokens are not the ASR model's (BPE pieces of another vocabulary); cutting inside a word would
leave half-words on the text side that neither tokenizer produces. Word boundaries are also where
the alignment is best defined: a word's time span is the same whichever tokenizer spelled it.
Spans are runs of whole words, so a speech span is always a stretch of complete words.

Frames from seconds: encoder frame ``t`` of the speech LLM covers ``[t, t + 1) * frame_shift``
seconds (``frame_shift = 1 / encoder.frame_rate()``, which need not be the aligner's), so a time
``s`` is the frame boundary ``round(s / frame_shift)``, clipped to ``[0, enc_len]``. Speech words
``i..j-1`` take frames ``[round(start_i / shift), round(end_{j-1} / shift))``, except that a span
beginning at the first word starts at frame 0 and one ending at the last word ends at ``enc_len``:
leading and trailing silence go with the speech next to them, and a span of every word is the
whole utterance, ``(0, -1)`` - exactly the single audio slot of plain ASR fine-tuning. Words never
overlap and rounding is monotone, so the spans never overlap and stay inside the utterance.

Spans too short for the projector (``min_frames``, see :func:`min_span_frames`; e.g. a conv1d
projector's kernel) are *widened by whole words*: the word after the span (the one before it at
the end of the utterance) joins it, and a span that reaches a neighbouring speech span *merges*
with it, until it has enough frames. A span that grows to every word is the whole utterance;
only if the whole utterance is shorter than ``min_frames`` is the speech dropped and the words
given as text. :attr:`Interleaved.widened` and :attr:`Interleaved.dropped` count both.

Choosing the speech words (``mode: words``): with ``n`` words and ratio ``r`` (the schedule's value
for the epoch), ``k`` = ``r * n`` rounded up or down at random so that ``E[k] = r * n``; ``k`` is cut
into runs whose lengths are drawn uniformly from ``span_words`` (the last run is what is left, so
it may be shorter); runs are merged while there are too few text words to separate them, shuffled,
and placed with random gaps of at least one text word. ``all_speech`` gives every word as speech
(the whole utterance), ``all_text`` none. The ratio schedule is ``constant`` (``ratio``) or
``linear``: ``ratio_start`` at epoch 1 to ``ratio`` at epoch ``schedule_epochs + 1`` and after.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from speechllm.llm.prompting import AUDIO_PLACEHOLDER
from speechllm.llm.text_tasks import PLACEHOLDER
from speechllm.tasks.asr import _construct
from speechllm.utils.config import ConfigError

Span = tuple[int, int]
WHOLE_UTTERANCE: Span = (0, -1)


def _constant_ratio(config: InterleaveConfig, epoch: float) -> float:
    return config.ratio


def _linear_ratio(config: InterleaveConfig, epoch: float) -> float:
    progress = min(max(epoch - 1.0, 0.0) / config.schedule_epochs, 1.0)
    return config.ratio_start + (config.ratio - config.ratio_start) * progress


# ratio as a function of the (1-based, possibly fractional) training epoch
RATIO_SCHEDULES: dict[str, Callable[[Any, float], float]] = {"constant": _constant_ratio, "linear": _linear_ratio}


@dataclass
class InterleaveConfig:
    """How many words go as speech (YAML: the ``interleave:`` block; :meth:`from_dict`).

    Args:
        mode: a key of :data:`MODES`: ``words`` (random runs of words), ``all_speech``, ``all_text``.
        ratio: expected fraction of words given as speech (the final value of a ``linear`` schedule).
        span_words: ``[min, max]`` words per speech run.
        schedule: a key of :data:`RATIO_SCHEDULES`: ``constant`` or ``linear``.
        ratio_start: ``linear``: the ratio at epoch 1.
        schedule_epochs: ``linear``: epochs from ``ratio_start`` to ``ratio``.
    """

    mode: str = "words"
    ratio: float = 0.5
    span_words: tuple[int, int] = (1, 5)
    schedule: str = "constant"
    ratio_start: float = 0.0
    schedule_epochs: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.span_words, (list, tuple)):
            raise ConfigError(f"interleave.span_words: expected [min, max], got {self.span_words!r}")
        self.span_words = tuple(self.span_words)  # a YAML list
        if self.mode not in MODES:
            raise ConfigError(f"interleave.mode: unknown choice {self.mode!r}; choose one of {sorted(MODES)}")
        if self.schedule not in RATIO_SCHEDULES:
            raise ConfigError(f"interleave.schedule: unknown choice {self.schedule!r}; "
                              f"choose one of {sorted(RATIO_SCHEDULES)}")
        for name in ("ratio", "ratio_start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"interleave.{name}: expected a number in [0, 1], got {value!r}")
        lo_hi = self.span_words
        if len(lo_hi) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi) \
                or not 1 <= lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"interleave.span_words: expected [min, max] with 1 <= min <= max, got {list(lo_hi)}")
        if isinstance(self.schedule_epochs, bool) or not isinstance(self.schedule_epochs, int) \
                or self.schedule_epochs < 1:
            raise ConfigError(f"interleave.schedule_epochs: expected an int >= 1, got {self.schedule_epochs!r}")

    @classmethod
    def from_dict(cls, conf: Mapping[str, Any] | None) -> InterleaveConfig:
        """From a YAML mapping (None: the defaults); unknown keys are a :class:`ConfigError`."""
        return _construct(cls, "interleave", conf)

    def ratio_at(self, epoch: float) -> float:
        """The speech ratio in training epoch ``epoch`` (1-based, as the Trainer counts)."""
        return RATIO_SCHEDULES[self.schedule](self, epoch)


def choose_word_runs(n_words: int, ratio: float, span_words: Sequence[int], rng: random.Random) -> list[Span]:
    """Random runs ``[i, j)`` of words to give as speech, in order, separated by at least one text
    word, about ``ratio * n_words`` words in all (see the module docstring)."""
    x = ratio * n_words
    k = min(math.floor(x) + (rng.random() < x - math.floor(x)), n_words)
    lengths: list[int] = []
    while sum(lengths) < k:
        lengths.append(min(rng.randint(span_words[0], span_words[1]), k - sum(lengths)))
    while len(lengths) - 1 > n_words - k:  # not enough text words to keep the runs apart
        last = lengths.pop()
        lengths[-1] += last
    rng.shuffle(lengths)
    m = len(lengths)
    free = n_words - k - max(m - 1, 0)  # text words beyond the one between two runs
    bars = sorted(rng.sample(range(free + m), m))  # stars and bars: m + 1 gaps summing to free
    gaps = [b - a - 1 for a, b in zip([-1] + bars, bars + [free + m])]
    runs, pos = [], gaps[0]
    for t, length in enumerate(lengths):
        runs.append((pos, pos + length))
        pos += length + gaps[t + 1] + 1
    return runs


# mode -> (n_words, ratio, span_words, rng) -> speech runs of words
MODES: dict[str, Callable[[int, float, Sequence[int], random.Random], list[Span]]] = {
    "words": choose_word_runs,
    "all_speech": lambda n, ratio, span_words, rng: [(0, n)],
    "all_text": lambda n, ratio, span_words, rng: [],
}


def word_frame_bounds(times: Sequence[tuple[float, float]], frame_shift: float, enc_len: int) -> list[Span]:
    """Encoder-frame bounds ``[start, end)`` of words with times ``(start, end)`` in seconds: boundaries
    ``round(s / frame_shift)`` clipped to ``[0, enc_len]``; the first word starts at 0, the last ends
    at ``enc_len`` (silence before and after goes with them)."""
    if frame_shift <= 0 or enc_len < 0:
        raise ValueError(f"frame_shift must be > 0 and enc_len >= 0, got {frame_shift} and {enc_len}")
    for a, b in zip(times, times[1:]):
        if b[0] < a[1] - 1e-6 or a[1] < a[0]:
            raise ValueError(f"word times must be in order and not overlap: {a} then {b}")

    def frame(s: float) -> int:
        return min(max(round(s / frame_shift), 0), enc_len)

    bounds = [(frame(s), frame(e)) for s, e in times]
    if bounds:
        bounds[0] = (0, bounds[0][1])
        bounds[-1] = (bounds[-1][0], enc_len)
    return bounds


def run_frames(run: Span, bounds: Sequence[Span]) -> Span:
    """Frames ``[start, end)`` of the words ``[i, j)`` (``bounds`` from :func:`word_frame_bounds`)."""
    i, j = run
    return (bounds[i][0], bounds[j - 1][1]) if j > i else (bounds[i][0], bounds[i][0])


def fit_runs(runs: Sequence[Span], bounds: Sequence[Span], min_frames: int) -> tuple[list[Span], int, int]:
    """Widen (by whole words) and merge runs until each spans ``>= min_frames`` frames.

    Returns ``(runs, widened, dropped)``: ``widened`` counts the runs that were too short,
    ``dropped`` is 1 when even every word together is too short (the runs are then ``[]``).
    """
    n = len(bounds)
    runs = [list(r) for r in runs]

    def length(r: list[int]) -> int:
        s, e = run_frames((r[0], r[1]), bounds)
        return e - s

    widened = sum(length(r) < min_frames for r in runs)
    t = 0
    while t < len(runs):
        r = runs[t]
        if length(r) >= min_frames:
            t += 1
            continue
        if r == [0, n]:
            return [], widened, 1
        if r[1] < n:
            r[1] += 1
        else:
            r[0] -= 1
        if t + 1 < len(runs) and runs[t + 1][0] <= r[1]:
            r[1] = runs.pop(t + 1)[1]
        if t > 0 and runs[t - 1][1] >= r[0]:
            runs[t - 1][1] = runs.pop(t)[1]
            t -= 1
    return [(i, j) for i, j in runs], widened, 0


def interleaved_text(words: Sequence[str], runs: Sequence[Span]) -> str:
    """``words`` joined with spaces, each run ``[i, j)`` replaced by one audio placeholder."""
    out, pos = [], 0
    for i, j in runs:
        out += list(words[pos:i]) + [AUDIO_PLACEHOLDER]
        pos = j
    return " ".join(out + list(words[pos:]))


def min_span_frames(projector: Any, limit: int = 4096) -> int:
    """Fewest encoder frames for which ``projector.output_lengths`` gives at least one output."""
    ok = (projector.output_lengths(torch.arange(1, limit + 1)) >= 1).nonzero()
    if ok.numel() == 0:
        raise ValueError(f"the projector gives no output for any length up to {limit} frames")
    return int(ok[0, 0]) + 1


@dataclass
class Interleaved:
    """One user turn with speech spans (see :func:`interleave`).

    ``user``: the wording with text words and placeholders; ``frame_spans``: per placeholder the
    encoder frames ``[start, end)``, ``(0, -1)`` for the whole utterance; ``word_runs``: per
    placeholder the words ``[i, j)`` it stands for; ``widened``/``dropped``: runs widened to reach
    ``min_frames``, and speech given as text because the utterance is too short for the projector.
    """

    user: str
    frame_spans: list[Span]
    word_runs: list[Span]
    widened: int = 0
    dropped: int = 0

    def audio_spans(self, utt_index: int) -> list[tuple[int, int, int]]:
        """The batch's ``audio_spans`` entry for utterance ``utt_index`` of the batch."""
        return [(utt_index, s, e) for s, e in self.frame_spans]


def interleave(words: Sequence[Sequence[Any]], wording: str, config: InterleaveConfig, rng: random.Random,
               frame_shift: float, enc_len: int, min_frames: int = 1, epoch: float = 1) -> Interleaved:
    """The user turn of ``wording`` (with ``{text}``) for ``words`` ``[(word, start_s, end_s), ...]``
    (:class:`~speechllm.align.WordTime`) of an utterance of ``enc_len`` encoder frames
    ``frame_shift`` seconds apart; ``min_frames``: fewest frames a speech span may have
    (:func:`min_span_frames` of the projector); ``epoch``: for the ratio schedule.

    ``rng`` draws the speech words: a ``random.Random`` (the training collate passes the example's
    :func:`~speechllm.data.example_rng.example_rng`) or the ``random`` module itself. ``words`` may
    be empty with ``mode: all_speech`` (an utterance without an alignment gets the whole-utterance
    slot)."""
    if wording.count(PLACEHOLDER) != 1:
        raise ValueError(f"the wording needs exactly one {PLACEHOLDER}: {wording!r}")
    texts = [w[0] for w in words]
    runs = MODES[config.mode](len(texts), config.ratio_at(epoch), config.span_words, rng)
    whole = [(0, len(texts))]
    if not runs or runs == whole:  # no speech, or the whole utterance as today: no frames to fit
        return Interleaved(wording.replace(PLACEHOLDER, interleaved_text(texts, runs)),
                           [WHOLE_UTTERANCE] if runs else [], runs)
    bounds = word_frame_bounds([(w[1], w[2]) for w in words], frame_shift, enc_len)
    runs, widened, dropped = fit_runs(runs, bounds, min_frames)
    spans = [WHOLE_UTTERANCE] if runs == whole else [run_frames(r, bounds) for r in runs]
    return Interleaved(wording.replace(PLACEHOLDER, interleaved_text(texts, runs)), spans, runs, widened, dropped)
