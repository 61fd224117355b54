"""CTC forced word alignment: word spans on a hand-made posterior with a known path, failures,
CTM files, and the align_words CLI with a tiny random ASR model."""
from __future__ import annotations

import math

import pytest
import torch

from asr_toys import tiny_config, write_feats_dir, write_model_dir
from speechllm.align import (ALIGNERS, AlignmentError, CTCAligner, WordTime, align_words, read_ctm, word_token_ids,
                             write_ctm)
from speechllm.align.ctc_align import min_ctc_frames, token_frame_spans
from speechllm.bin.align_words import main
from speechllm.data.datadir import DataDirError
from speechllm.text.tokenizer import Tokenizer

SHIFT = 0.04
V = 6  # 0 <blank>, tokens 1..5
# Three words: "ab" = [2, 3], "c" = [4], "aa" = [2, 2] (a repeat: it needs a blank in between).
WORDS = ["ab", "c", "aa"]
WORD_TOKENS = [[2, 3], [4], [2, 2]]
# The best path, frame by frame: leading silence, tokens (a token may last several frames), trailing silence.
PATH = [0, 0, 2, 2, 0, 3, 0, 4, 4, 0, 2, 0, 2, 0, 0]
TRUE_WORD_FRAMES = [(2, 7), (7, 10), (10, 13)]  # a word ends where the next starts; the last one after its token


def posterior(path: list[int], peak: float = 0.9) -> torch.Tensor:
    """Log-posteriors ``[T, V]`` with ``peak`` on the path's label of each frame."""
    probs = torch.full((len(path), V), (1.0 - peak) / (V - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


def test_words_in_order_non_overlapping_covering_the_aligned_region_and_matching_the_truth():
    words = align_words(posterior(PATH), WORDS, WORD_TOKENS, SHIFT)
    assert [w.word for w in words] == WORDS
    assert [(round(w.start / SHIFT), round(w.end / SHIFT)) for w in words] == TRUE_WORD_FRAMES
    assert all(a.end == pytest.approx(b.start) for a, b in zip(words, words[1:]))  # contiguous, no overlap
    assert words[0].start == pytest.approx(2 * SHIFT) and words[-1].end == pytest.approx(13 * SHIFT)
    assert all(w.start < w.end for w in words)


def test_token_spans_follow_the_path_and_repeats_need_a_blank():
    flat = [t for g in WORD_TOKENS for t in g]
    assert token_frame_spans(posterior(PATH), flat) == [(2, 4), (5, 6), (7, 9), (10, 11), (12, 13)]
    assert min_ctc_frames(flat) == 6 and min_ctc_frames([2, 3]) == 2 and min_ctc_frames([]) == 0


def test_too_few_frames_is_an_alignment_error_that_says_why():
    with pytest.raises(AlignmentError, match="5 encoder frames for 5 tokens with 1 repeats: CTC needs at least 6") as e:
        align_words(posterior([0, 2, 3, 4, 2]), WORDS, WORD_TOKENS, SHIFT)
    assert e.value.reason == "too_few_frames"
    with pytest.raises(AlignmentError) as e:
        align_words(posterior(PATH), [], [], SHIFT)
    assert e.value.reason == "empty_text"
    with pytest.raises(AlignmentError) as e:
        align_words(torch.zeros(0, V), WORDS, WORD_TOKENS, SHIFT)
    assert e.value.reason == "no_frames"


class _PathModel(torch.nn.Module):
    """A stand-in ASR model whose encoder output is the posterior itself (CTC head = log)."""

    blank = 0

    def __init__(self) -> None:
        super().__init__()
        self.encoder = type("Enc", (), {"frame_rate": staticmethod(lambda: 1.0 / SHIFT)})()
        self.ctc = type("Head", (), {"log_softmax": staticmethod(lambda h: h)})()

    def encode(self, x, x_lens):
        return x, x_lens


class _WordTokenizer:
    """Each word's tokens as in WORD_TOKENS; pieces start with "▁" at word starts."""

    def encode(self, text):
        return [t for w in text.split() for t in WORD_TOKENS[WORDS.index(w)]]

    def pieces(self, text):
        return [("\u2581" if i == 0 else "") + "x"
                for w in text.split() for i in range(len(WORD_TOKENS[WORDS.index(w)]))]


def test_ctc_aligner_batch_returns_words_or_the_failure_per_utterance():
    aligner = ALIGNERS["ctc"](_PathModel(), _WordTokenizer())
    assert isinstance(aligner, CTCAligner) and aligner.frame_shift == pytest.approx(SHIFT)
    x = torch.stack([posterior(PATH), posterior(PATH)])
    out = aligner.align_batch(x, torch.tensor([len(PATH), 4]), ["ab c aa", "ab c aa"])
    assert [(round(w.start / SHIFT), round(w.end / SHIFT)) for w in out[0]] == TRUE_WORD_FRAMES
    assert isinstance(out[1], AlignmentError) and out[1].reason == "too_few_frames"


def test_ctm_round_trip(tmp_path):
    ali = {"u2": [WordTime("c", 0.0, 0.12), WordTime("d", 0.12, 0.5)],
           "u1": [WordTime("a", 0.24, 0.36), WordTime("b", 0.36, 0.96)]}
    write_ctm(tmp_path / "word_align", ali)
    lines = (tmp_path / "word_align").read_text().splitlines()
    assert lines[0] == "u1 1 0.24 0.12 a" and [line.split()[0] for line in lines] == ["u1", "u1", "u2", "u2"]
    back = read_ctm(tmp_path / "word_align")
    assert list(back) == ["u1", "u2"]
    for utt, words in ali.items():
        assert [w.word for w in back[utt]] == [w.word for w in words]
        assert [(w.start, w.end) for w in back[utt]] == [pytest.approx((w.start, w.end)) for w in words]


@pytest.mark.parametrize("lines, message", [
    (["u1 1 0 0.5 a", "u1 1 0.5 x b"], r"word_align:2: start/duration are not numbers"),
    (["u1 1 0 0.5 a", "u1 1 0.5"], r"word_align:2: expected 5 fields"),
    (["u1 1 0 0.5 a", "u1 1 0.3 0.2 b"], r"word_align:2: 'u1': word 'b' starts at 0.3 before"),
    (["u1 1 -1 0.5 a"], r"word_align:1: negative or NaN"),
    (["u1 1 0 0.5 a", ""], r"word_align:2: empty line"),
])
def test_read_ctm_errors_name_file_and_line(tmp_path, lines, message):
    (tmp_path / "word_align").write_text("".join(line + "\n" for line in lines))
    with pytest.raises(DataDirError, match=message):
        read_ctm(tmp_path / "word_align")


# ----------------------------------------------------------------------------------------
# The CLI with a tiny random ASR model
# ----------------------------------------------------------------------------------------
TEXTS = {"u1": "the lord is my shepherd", "u2": "in the beginning", "u3": "and god said",
         "u4": "let there be light and there was light in the beginning",  # far too long for 24 frames
         "u6": "no features for this one", "u7": ""}
FRAMES = {"u1": 120, "u2": 80, "u3": 90, "u4": 24, "u5": 60, "u7": 50}  # u4: 5 encoder frames; u5: no transcript


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("align_words")
    spm_model, tokens = write_model_dir(root / "model", list(TEXTS.values()) * 3, tiny_config(ctc_weight=1.0),
                                        model_type="bpe", vocab_size=40)
    data = write_feats_dir(root / "data", FRAMES)
    (data / "text").write_text("".join(f"{u} {t}".rstrip() + "\n" for u, t in sorted(TEXTS.items())))
    return root / "model", data, Tokenizer(spm_model, tokens)


def test_word_groups_are_the_tokenizers_encoding_of_the_text(model_and_data):
    _, _, tok = model_and_data
    groups = word_token_ids(tok, "the lord is my shepherd")
    assert len(groups) == 5 and [t for g in groups for t in g] == tok.encode("the lord is my shepherd")
    assert all(tok.ids_to_tokens(g)[0].startswith("\u2581") for g in groups)


def test_cli_two_jobs_then_combine_write_a_ctm_of_the_transcripts_words_and_list_failures(model_and_data, tmp_path,
                                                                                           capfd):
    model_dir, data, _ = model_and_data
    for job in (1, 2):
        assert main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(tmp_path),
                     "--nj", "2", "--job", str(job), "--batch_size", "2"]) == 0
    assert not (tmp_path / "word_align").exists()
    assert main(["--output_dir", str(tmp_path), "--combine", "2"]) == 0
    ali = read_ctm(tmp_path / "word_align")
    assert sorted(ali) == ["u1", "u2", "u3"]
    frame_shift = 4 * 0.01  # tiny_config: Conformer with subsampling 4 on 10 ms frames
    for utt, words in ali.items():
        assert [w.word for w in words] == TEXTS[utt].split()
        assert all(a.end == pytest.approx(b.start) for a, b in zip(words, words[1:]))
        assert words[-1].end <= (FRAMES[utt] // 4) * frame_shift + 1e-6
        assert all(math.isclose(w.start / frame_shift, round(w.start / frame_shift), abs_tol=1e-3) for w in words)
    failed = dict(line.split("\t") for line in (tmp_path / "align_failed.txt").read_text().splitlines())
    assert sorted(failed) == ["u4", "u5", "u6", "u7"]
    assert failed["u4"].startswith("too_few_frames: 5 encoder frames for")
    assert failed["u5"].startswith("no_text:") and failed["u6"].startswith("no_input:")
    assert failed["u7"].startswith("empty_text:")
    err = capfd.readouterr().err
    assert "aligned 3 of 7 utterances" in err and "; 4 failed (" in err
    assert all(f"1 {reason}" in err for reason in ("too_few_frames", "no_text", "no_input", "empty_text"))


def test_cli_one_job_writes_into_the_data_dir_and_bad_input_exits_1(model_and_data, tmp_path, capsys):
    model_dir, data, _ = model_and_data
    out = tmp_path / "data"
    out.mkdir()
    for name in ("feats.scp", "text"):
        (out / name).write_text((data / name).read_text())
    assert main(["--model_dir", str(model_dir), "--data_dir", str(out)]) == 0
    assert sorted(read_ctm(out / "word_align")) == ["u1", "u2", "u3"]
    assert len((out / "align_failed.txt").read_text().splitlines()) == 4
    assert main(["--output_dir", str(tmp_path / "nothing"), "--combine", "2"]) == 1
    assert "job 1 of 2 has not finished" in capsys.readouterr().err
