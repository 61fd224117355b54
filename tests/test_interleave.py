"""Speech-text interleaving: user turns with audio placeholders, encoder-frame spans of the chosen
words, widening for the projector, the ratio schedule, and determinism."""
from __future__ import annotations

import random

import pytest
import torch

from speechllm.align import WordTime
from speechllm.llm.prompting import AUDIO_PLACEHOLDER, render_prompt_pieces, response_ids
from speechllm.mtbi.interleave import (
    MODES,
    WHOLE_UTTERANCE,
    InterleaveConfig,
    choose_word_runs,
    fit_runs,
    interleave,
    min_span_frames,
    word_frame_bounds,
)
from speechllm.nets.projectors import PROJECTORS
from speechllm.tasks.sllm import user_turn
from speechllm.utils.config import ConfigError
from sllm_toys import make_tiny_llm, make_tiny_tokenizer, random_feats, tiny_speech_llm

WORDING = "Repeat this sentence: {text}"
SENTENCE = "in the beginning god created the heaven and the earth".split()
ALIGN_SHIFT = 0.06  # the aligner's frames (mini_synth Conformer, subsampling 6)
SHIFT = 0.04        # the speech LLM's encoder frames: another rate on purpose
LEAD, WORD_S = 0.12, 0.3
WORDS = [WordTime(w, LEAD + WORD_S * i, LEAD + WORD_S * (i + 1)) for i, w in enumerate(SENTENCE)]
ENC_LEN = 85  # 3.4 s: 0.12 s leading silence, 3.0 s of words, 0.28 s trailing silence


def frame(seconds: float) -> int:
    return round(seconds / SHIFT)


def expected_frames(i: int, j: int) -> tuple[int, int]:
    """Frames of words [i, j): their times, with the utterance edges at 0 and ENC_LEN."""
    return (0 if i == 0 else frame(WORDS[i].start), ENC_LEN if j == len(WORDS) else frame(WORDS[j - 1].end))


def run_interleave(seed: int = 0, **conf) -> object:
    return interleave(WORDS, WORDING, InterleaveConfig(**conf), random.Random(seed), SHIFT, ENC_LEN)


@pytest.fixture(scope="module")
def toy_tok(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("toy_tok"))


@pytest.mark.parametrize("seed", range(6))
def test_prompt_pieces_have_one_slot_per_span_and_the_text_words_in_order(toy_tok, seed):
    out = run_interleave(seed, ratio=0.5, span_words=[1, 3])
    pieces = render_prompt_pieces(toy_tok, out.user, n_audio=len(out.frame_spans))
    assert pieces.n_audio == len(out.frame_spans) == len(out.word_runs) >= 1
    rendered = AUDIO_PLACEHOLDER.join(toy_tok.decode(t.tolist()) for t in pieces.text_ids)
    assert rendered == f"<|user|>{out.user}<|end|><|assistant|>"
    speech = {k for i, j in out.word_runs for k in range(i, j)}
    text_words = out.user.replace(AUDIO_PLACEHOLDER, " ").split()[len(WORDING.split()) - 1:]
    assert text_words == [w for k, w in enumerate(SENTENCE) if k not in speech]
    # each placeholder sits where its run of words was: putting the words back gives the sentence
    runs, restored = iter(out.word_runs), []
    for token in out.user.split()[len(WORDING.split()) - 1:]:
        restored += SENTENCE[slice(*next(runs))] if token == AUDIO_PLACEHOLDER else [token]
    assert restored == SENTENCE


@pytest.mark.parametrize("seed", range(6))
def test_spans_cover_exactly_the_chosen_words_frames_in_order_without_overlap(seed):
    out = run_interleave(seed, ratio=0.4, span_words=[1, 2])
    assert out.frame_spans == [expected_frames(i, j) for i, j in out.word_runs]
    flat = [f for span in out.frame_spans for f in span]
    assert flat == sorted(flat) and all(0 <= s < e <= ENC_LEN for s, e in out.frame_spans)
    assert all(j0 < i1 for (_, j0), (i1, _) in zip(out.word_runs, out.word_runs[1:]))  # a text word between runs


def test_ratio_0_gives_text_only_and_ratio_1_the_whole_utterance_as_today(toy_tok):
    none = run_interleave(ratio=0.0)
    assert none.frame_spans == [] and none.user == WORDING.replace("{text}", " ".join(SENTENCE))
    assert render_prompt_pieces(toy_tok, none.user).n_audio == 0
    for out in (run_interleave(ratio=1.0, span_words=[1, 2]), run_interleave(mode="all_speech", ratio=0.0)):
        assert out.frame_spans == [WHOLE_UTTERANCE] and out.word_runs == [(0, len(SENTENCE))]
        assert out.user == user_turn(WORDING) and out.audio_spans(3) == [(3, 0, -1)]
    assert run_interleave(mode="all_text", ratio=1.0).user == none.user
    # an utterance without an alignment still gets today's slot with all_speech
    unaligned = interleave([], WORDING, InterleaveConfig(mode="all_speech"), random.Random(0), SHIFT, ENC_LEN)
    assert unaligned.user == user_turn(WORDING) and unaligned.frame_spans == [WHOLE_UTTERANCE]


def test_the_expected_speech_fraction_is_the_ratio_and_run_lengths_stay_in_range():
    rng, n, fractions = random.Random(0), 23, []
    for _ in range(2000):
        runs = choose_word_runs(n, 0.3, (2, 4), rng)
        assert all(1 <= j - i <= 4 for i, j in runs) and sum(j - i < 2 for i, j in runs) <= 1
        assert all(j0 < i1 for (_, j0), (i1, _) in zip(runs, runs[1:])) and (not runs or runs[-1][1] <= n)
        fractions.append(sum(j - i for i, j in runs) / n)
    assert sum(fractions) / len(fractions) == pytest.approx(0.3, abs=0.01)


def test_runs_too_short_for_the_projector_are_widened_by_words_and_merged():
    bounds = [(0, 10), (10, 11), (11, 20), (20, 21), (21, 22), (22, 30)]  # words 1, 3 and 4 are 1 frame long
    # (1, 2) takes word 2 and then touches (3, 4): they merge; (5, 6) is long enough
    assert fit_runs([(1, 2), (3, 4), (5, 6)], bounds, min_frames=3) == ([(1, 4), (5, 6)], 2, 0)
    # (1, 2) takes word 2 and stays apart from (4, 5), which takes word 5
    assert fit_runs([(1, 2), (4, 5)], bounds, min_frames=3) == ([(1, 3), (4, 6)], 2, 0)
    assert fit_runs([(0, 1), (2, 3)], bounds, min_frames=3) == ([(0, 1), (2, 3)], 0, 0)
    ones = [(k, k + 1) for k in range(6)]  # six words of one frame each
    assert fit_runs([(5, 6)], ones, min_frames=3) == ([(3, 6)], 1, 0)  # the last run grows left
    assert fit_runs([(0, 1)], [(0, 1), (1, 2)], min_frames=5) == ([], 1, 1)  # the utterance is too short


def test_interleave_widens_short_spans_and_drops_speech_only_when_the_utterance_is_too_short():
    cfg = InterleaveConfig(ratio=0.3, span_words=[1, 1])
    out = interleave(WORDS, WORDING, cfg, random.Random(1), SHIFT, ENC_LEN, min_frames=12)
    assert out.widened >= 1 and all(e - s >= 12 for s, e in out.frame_spans)
    assert out.frame_spans == [expected_frames(i, j) for i, j in out.word_runs]
    short = [WordTime("a", 0.0, 0.04), WordTime("b", 0.04, 0.08)]
    tiny = interleave(short, WORDING, InterleaveConfig(ratio=0.5), random.Random(0), SHIFT, 2, min_frames=3)
    assert tiny.frame_spans == [] and tiny.dropped == 1 and tiny.user == "Repeat this sentence: a b"


def test_frames_come_from_seconds_clipped_to_the_encoder_length():
    bounds = word_frame_bounds([(0.1, 0.3), (0.3, 0.62), (0.62, 2.0)], frame_shift=0.04, enc_len=20)
    assert bounds == [(0, 8), (8, 16), (16, 20)]
    with pytest.raises(ValueError, match="in order and not overlap"):
        word_frame_bounds([(0.0, 0.5), (0.3, 0.6)], 0.04, 20)


def test_ratio_schedules():
    const = InterleaveConfig(ratio=0.4)
    assert [const.ratio_at(e) for e in (1, 5, 50)] == [0.4, 0.4, 0.4]
    lin = InterleaveConfig.from_dict({"schedule": "linear", "ratio_start": 0.2, "ratio": 0.8, "schedule_epochs": 3})
    assert [lin.ratio_at(e) for e in (1, 2, 3, 4, 10)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8])
    assert lin.ratio_at(1.5) == pytest.approx(0.3)  # fractional epochs (progress within an epoch)
    # the schedule reaches the chooser: ratio 0 at epoch 1, 1 from epoch 2 on
    sched = {"schedule": "linear", "ratio_start": 0.0, "ratio": 1.0, "schedule_epochs": 1}
    cfg = InterleaveConfig(**sched)
    assert interleave(WORDS, WORDING, cfg, random.Random(0), SHIFT, ENC_LEN, epoch=1).frame_spans == []
    assert interleave(WORDS, WORDING, cfg, random.Random(0), SHIFT, ENC_LEN, epoch=2).frame_spans == [WHOLE_UTTERANCE]


def test_same_seed_same_result_and_different_seeds_differ():
    assert run_interleave(7, ratio=0.5) == run_interleave(7, ratio=0.5)
    assert len({run_interleave(seed, ratio=0.5).user for seed in range(10)}) > 3


@pytest.mark.parametrize("conf, message", [
    ({"mode": "tokens"}, "interleave.mode: unknown choice 'tokens'"),
    ({"ratio": 1.5}, r"interleave.ratio: expected a number in \[0, 1\]"),
    ({"span_words": [3, 1]}, r"interleave.span_words: expected \[min, max\]"),
    ({"span_words": 2}, r"interleave.span_words: expected \[min, max\]"),
    ({"schedule": "cosine"}, "interleave.schedule: unknown choice"),
    ({"schedule_epochs": 0}, "interleave.schedule_epochs"),
    ({"ratios": 0.5}, r"interleave: unknown option\(s\) \['ratios'\]"),
])
def test_config_errors(conf, message):
    with pytest.raises(ConfigError, match=message):
        InterleaveConfig.from_dict(conf)


def test_min_span_frames_follow_the_projectors_output_lengths():
    assert set(MODES) == {"words", "all_speech", "all_text"}
    assert min_span_frames(PROJECTORS["linear"](8, 16, downsample=5, hidden_size=8)) == 1
    assert min_span_frames(PROJECTORS["conv1d"](8, 16, downsample=2, kernel_size=3, hidden_size=8)) == 3
    assert min_span_frames(PROJECTORS["qformer"](8, 16, window=4, d_model=8, num_heads=2)) == 1
    with torch.no_grad():  # a span of min_span_frames frames really gives an output
        proj = PROJECTORS["conv1d"](8, 16, downsample=2, kernel_size=3, hidden_size=8)
        assert proj(torch.randn(1, 3, 8), torch.tensor([3]))[1].tolist() == [1]


def test_interleaved_batch_runs_through_the_speech_llm(tmp_path):
    """Two utterances, one interleaved sequence each: one projected piece per span, a finite loss."""
    llm_dir = make_tiny_llm(tmp_path / "llm")
    model = tiny_speech_llm(llm_dir)  # TinyFbankEncoder: 2x subsampling, 50 frames/s; linear projector (2x)
    tok, shift = model.tokenizer, 1.0 / model.encoder.frame_rate()
    feats, lens = random_feats([64, 40])
    enc_lens = (lens // 2).tolist()
    rng, cfg = random.Random(3), InterleaveConfig(ratio=0.5, span_words=[1, 2])
    min_frames = min_span_frames(model.projector)
    words = [[WordTime(w, 0.1 + 0.1 * i, 0.2 + 0.1 * i) for i, w in enumerate(SENTENCE[:n])] for n in (5, 3)]
    outs = [interleave(w, WORDING, cfg, rng, shift, n, min_frames) for w, n in zip(words, enc_lens)]
    assert all(out.frame_spans for out in outs)
    batch = {"utt_ids": ["u0", "u1"], "feats": feats, "feats_lens": lens,
             "prompts": [render_prompt_pieces(tok, o.user, n_audio=len(o.frame_spans)) for o in outs],
             "audio_spans": [o.audio_spans(n) for n, o in enumerate(outs)],
             "response_ids": [response_ids(tok, o.user, "in the beginning") for o in outs]}
    with torch.no_grad():
        audio = model.audio_embeddings(batch)
        loss, stats = model(batch)
    for pieces, out, n in zip(audio, outs, enc_lens):
        lengths = torch.tensor([(n if e == -1 else e) - s for s, e in out.frame_spans])
        assert [len(p) for p in pieces] == model.projector.output_lengths(lengths).tolist()
    assert torch.isfinite(loss) and stats["loss"] > 0
