"""The MTBI benchmark scorer on a hand-made targets file whose every number is counted by hand
(the comments on the examples say what each one is), and the ``mtbi_score`` command."""
import json

import pytest

from speechllm.bin import mtbi_score
from speechllm.data.datadir import DataDirError
from speechllm.mtbi.evaluate import (TARGET_KEYS, has_answer_form, is_refusal, is_transcription, load_targets,
                                     same_answer, score_targets)

U1 = "in the beginning god created the heaven and the earth"  # 10 words
U2 = "and the earth was without form and void"                # 8 words
U3 = "i cannot dig to beg i am ashamed"                        # 8 words, holds a refusal phrase
TRANSCRIPTS = {"u1": U1, "u2": U2, "u3": U3}
SEEN, UNSEEN = "train", "heldout"

# (utt, task, answer_task, wording id, wording split, task split, LLM response, reference, LLM stopped, hyp)
# hyp None: no output for the example.
EXAMPLES = [
    ("u1", "transcribe", "repeat", 1, SEEN, SEEN, U1, U1, True,
     "in the beginning god created the heaven and earth"),                                    # 1 error
    ("u2", "transcribe", "repeat", 6, UNSEEN, SEEN, U2, U2, True, U2),                         # 0 errors
    ("u1", "transcribe", "repeat", 6, UNSEEN, SEEN, U1, U1, True, None),                       # missing: 10 errors
    ("u1", "count_words", "count_words", 1, SEEN, SEEN, "10", "10", True, "10 words"),         # agree, right
    ("u2", "count_words", "count_words", 2, SEEN, SEEN, "8", "8", True, U2),                   # transcribed
    ("u2", "count_words", "count_words", 6, UNSEEN, SEEN, "there are 8 words", "8", True, "8"),  # agree, right
    ("u1", "first_word", "first_word", 1, SEEN, SEEN, "in", "in", True, ""),                   # empty
    ("u3", "first_word", "first_word", 1, SEEN, SEEN, "i", "i", True,
     "I cannot dig to beg"),                                            # WER 37.5: transcribed; no refusal
    ("u2", "first_word", "first_word", 6, UNSEEN, SEEN, "and", "and", True,
     "I'm sorry, I cannot answer that."),                          # refusal: 6 words for a 1-word answer
    ("u1", "continue", "continue", 1, SEEN, SEEN, U2, U2, True, U2),                           # agree, right
    ("u2", "continue", "continue", 1, SEEN, SEEN, U2, "and darkness was upon the face of the deep", True,
     "and darkness was upon the face of the deep"),  # the LLM repeats (excluded from IF); the model is right
    ("u3", "continue", "continue", 2, SEEN, SEEN, "for i know what to do", None, False,
     "for i know what to do " * 4),                # looping (24 words for 6), cut, no reference
    ("u2", "uppercase", "uppercase", 1, UNSEEN, UNSEEN, U2.upper(), U2.upper(), True, U2),     # case wrong; no IF
    ("u1", "uppercase", "uppercase", 2, UNSEEN, UNSEEN, U1.upper(), U1.upper(), True, U1.upper()),  # right; no IF
    ("u1", "keyword", "keyword", 1, UNSEEN, UNSEEN, "beginning", "beginning", True, "beginning"),  # right
    ("u2", "keyword", "keyword", 1, UNSEEN, UNSEEN, "without", "without", True, "earth"),      # wrong
    ("u3", "keyword", "keyword", 3, UNSEEN, UNSEEN, "cannot", "ashamed", True, "cannot"),      # agrees with a wrong LLM
]
EXTRA_HYP = ("u9|keyword/1", "foo")
CUT_IDS = {"u3|continue/2"}


def target_lines() -> list[dict]:
    lines = []
    for utt, task, answer, wid, wsplit, tsplit, response, reference, stopped, _ in EXAMPLES:
        lines.append({"id": f"{utt}|{task}/{wid}", "utt_id": utt, "task": task, "answer_task": answer,
                      "wording": f"{task}/{wid}", "wording_split": wsplit, "task_split": tsplit,
                      "prompt": f"Do {task}: {{text}}", "transcript": TRANSCRIPTS[utt], "response": response,
                      "reference": reference, "stopped": stopped})
    return lines


def write_jsonl(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def files(tmp_path):
    targets = write_jsonl(tmp_path / "test.jsonl", target_lines())
    hyps = {f"{e[0]}|{e[1]}/{e[3]}": e[9] for e in EXAMPLES if e[9] is not None}
    hyps[EXTRA_HYP[0]] = EXTRA_HYP[1]
    (tmp_path / "text").write_text("".join(f"{k} {v}".rstrip() + "\n" for k, v in sorted(hyps.items())))
    (tmp_path / "gen_info").write_text("".join(f"{k} 5 {int(k not in CUT_IDS)}\n" for k in sorted(hyps)))
    return tmp_path, targets, hyps


@pytest.fixture
def result(files):
    _, targets, hyps = files
    gen_info = {k: (5, k not in CUT_IDS) for k in hyps}
    return score_targets(load_targets(targets), hyps, gen_info)[0]


def test_prompt_generalization_splits_seen_tasks_by_wording(result):
    seen, unseen = result["prompt_generalization"]["seen_wordings"], result["prompt_generalization"]["unseen_wordings"]
    assert seen["wer"] == pytest.approx(100 * 1 / 10) and seen["num_ref_words"] == 10
    assert unseen["wer"] == pytest.approx(100 * 10 / 18)  # the missing output counts as all deletions
    assert seen["agreement"] == pytest.approx(100 * 2 / 7) and seen["num_agreement_items"] == 7
    assert unseen["agreement"] == pytest.approx(100 * 1 / 2)
    assert seen["num_items"] + unseen["num_items"] == 12  # uppercase/keyword examples are not in it


def test_instruction_following_counts_eligible_answers_that_are_not_transcripts(result):
    ifr = result["instruction_following"]
    assert ifr["num_excluded"] == 3  # the LLM repeating, and uppercase (a transcript once normalized)
    assert ifr["num_eligible"] == 11 and ifr["num_followed"] == 6
    assert ifr["num_transcribed"] == 2 and ifr["num_empty_or_missing"] == 1
    assert ifr["num_off_form"] == 2  # the refusal and the loop
    assert ifr["rate"] == pytest.approx(100 * 6 / 11)
    assert ifr["seen_tasks"] == pytest.approx(100 * 3 / 8) and ifr["unseen_tasks"] == pytest.approx(100.0)


def test_task_generalization_compares_with_the_llm_and_the_reference(result):
    seen, unseen = result["task_generalization"]["seen_tasks"], result["task_generalization"]["unseen_tasks"]
    assert unseen["agreement"] == pytest.approx(100 * 3 / 5)
    assert unseen["accuracy"] == pytest.approx(100 * 2 / 5)
    assert seen["agreement"] == pytest.approx(100 * 3 / 9)
    assert seen["accuracy"] == pytest.approx(100 * 4 / 8) and seen["num_with_reference"] == 8  # one null reference
    assert result["seen_tasks"] == ["continue", "count_words", "first_word", "transcribe"]
    assert result["unseen_tasks"] == ["keyword", "uppercase"]
    for group in (seen, unseen):
        low, high = group["accuracy_ci95"]
        assert 0 <= low <= group["accuracy"] <= high <= 100 and low < high


def test_accuracy_interval_resamples_utterances_not_examples():
    """Every utterance has one right and one wrong answer: resampling utterances cannot move the
    accuracy (an example-level bootstrap would); independent examples give about the binomial
    interval; too few utterances give none, and the same input the same interval."""
    from types import SimpleNamespace as Item

    from speechllm.mtbi.evaluate import accuracy_ci95

    paired = [Item(utt_id=f"u{i}", correct=c) for i in range(50) for c in (True, False)]
    assert accuracy_ci95(paired) == [50.0, 50.0]
    independent = [Item(utt_id=f"u{i}", correct=i % 10 < 3) for i in range(400)]   # 30% right
    low, high = accuracy_ci95(independent)
    half_width = 1.96 * (0.3 * 0.7 / 400) ** 0.5 * 100                               # 4.49 points
    assert low == pytest.approx(30 - half_width, abs=1.0) and high == pytest.approx(30 + half_width, abs=1.0)
    assert accuracy_ci95(independent) == [low, high]
    no_reference = [Item(utt_id=f"u{i}", correct=None) for i in range(5)]
    assert accuracy_ci95(no_reference + paired[:2]) is None


def test_paired_difference_counts_only_the_examples_both_systems_were_judged_on():
    from speechllm.mtbi.evaluate import paired_accuracy_difference

    def rows(correct: list[bool | None], split: str = "heldout") -> list[dict]:
        return [{"id": f"u{i // 2}|t/{i % 2}", "utt_id": f"u{i // 2}", "task_split": split, "correct": c}
                for i, c in enumerate(correct)]

    base = rows([True, False] * 50)
    assert paired_accuracy_difference(base, base) == {"difference": 0.0, "ci95": [0.0, 0.0], "num_items": 100,
                                                      "num_utts": 50}
    better = rows([True, True] * 10 + [True, False] * 40)          # 10 more right: +10 points
    d = paired_accuracy_difference(base, better)
    assert d["difference"] == pytest.approx(10.0) and 4.0 < d["ci95"][0] < 10.0 < d["ci95"][1] < 17.0
    assert paired_accuracy_difference(base, rows([True] * 100, split="train")) is None
    assert paired_accuracy_difference(base, [{k: v for k, v in r.items() if k != "task_split"} for r in base]) is None


def test_per_task_numbers(result):
    per_task = result["per_task"]
    assert list(per_task) == ["transcribe", "count_words", "first_word", "continue", "uppercase", "keyword"]
    cw, kw, tr = per_task["count_words"], per_task["keyword"], per_task["transcribe"]
    assert cw["agreement"] == pytest.approx(200 / 3) and cw["accuracy"] == pytest.approx(200 / 3)
    assert cw["instruction_following"] == pytest.approx(200 / 3)
    assert kw["task_split"] == "heldout" and kw["agreement"] == pytest.approx(200 / 3)
    assert kw["accuracy"] == pytest.approx(100 / 3)
    assert tr["wer"] == pytest.approx(100 * 11 / 28) and tr["agreement"] is None
    assert tr["by_wording_split"]["heldout"]["wer"] == pytest.approx(100 * 10 / 18)
    assert per_task["uppercase"]["instruction_following"] is None  # nothing eligible
    assert per_task["continue"]["num_looping"] == 1 and per_task["continue"]["num_cut"] == 1


def test_problem_outputs_are_counted(result):
    assert result["counts"] == {"missing": 1, "empty": 1, "looping": 1, "cut": 1, "refusal": 1, "extra": 1}
    assert result["problem_ids"]["refusal"] == ["u2|first_word/6"]
    assert result["problem_ids"]["empty"] == ["u1|first_word/1"]
    assert result["problem_ids"]["missing"] == ["u1|transcribe/6"]
    assert result["overall"]["num_items"] == len(EXAMPLES)


def test_the_text_llm_is_scored_against_the_references(result):
    llm = result["llm"]
    assert llm["overall"]["accuracy"] == pytest.approx(100 * 11 / 13)
    assert llm["seen_tasks"]["accuracy"] == pytest.approx(100 * 7 / 8)
    assert llm["unseen_tasks"]["accuracy"] == pytest.approx(100 * 4 / 5)
    assert llm["overall"]["wer"] == 0.0 and llm["overall"]["num_cut"] == 1
    assert llm["prompt_generalization"]["unseen_wordings"]["wer"] == 0.0
    assert "agreement" not in llm["overall"] and "instruction_following" not in llm["overall"]


def test_without_gen_info_cut_counts_are_unknown(files):
    _, targets, hyps = files
    result = score_targets(load_targets(targets), hyps)[0]
    assert result["counts"]["cut"] is None and result["overall"]["num_cut"] is None


@pytest.mark.parametrize("text,expected", [
    ("a b c d", True), ("a b", True),  # 50% WER is still a transcription
    ("a", False), ("", False), ("A, B; C.", True),
])
def test_transcription_is_wer_at_most_half(text, expected):
    assert is_transcription(text, "a b c d") is expected


def test_answers_match_by_task_rules():
    assert same_answer("count_words", "eight? no, 8", "there are 8 words")
    assert not same_answer("count_words", "7", "8")
    assert same_answer("count_words", "eight", "Eight.")  # no digits in the LLM answer: text equality
    assert same_answer("uppercase", "AND GOD", "AND GOD.") and not same_answer("uppercase", "and god", "AND GOD")
    assert same_answer("uppercase", "and god", "and god")  # agrees with an LLM that kept the case
    assert same_answer("keyword", "Beginning.", "beginning")


def test_refusals_need_a_phrase_that_the_transcript_lacks():
    assert is_refusal("I'm sorry, I can't do that")
    assert is_refusal("As an AI I do not hear audio")
    assert not is_refusal("i cannot dig", context=[U3])
    assert is_refusal("Sorry, I cannot", context=[U3])  # "sorry" is not in the transcript
    assert not is_refusal("the lord is my shepherd")


def test_bad_targets_name_file_and_line(tmp_path):
    lines = target_lines()[:2]
    bad = [dict(lines[0]), dict(lines[0])]
    with pytest.raises(DataDirError, match=r"t\.jsonl:2: id 'u1\|transcribe/1' already used on line 1"):
        load_targets(write_jsonl(tmp_path / "t.jsonl", bad))
    del bad[1]["response"]
    bad[1]["id"] = "other"
    with pytest.raises(DataDirError, match=r"t\.jsonl:2: missing key\(s\) \['response'\]"):
        load_targets(write_jsonl(tmp_path / "t.jsonl", bad))
    (tmp_path / "t.jsonl").write_text(json.dumps(lines[0]) + "\n{oops\n")
    with pytest.raises(DataDirError, match=r"t\.jsonl:2: invalid JSON"):
        load_targets(tmp_path / "t.jsonl")
    assert set(TARGET_KEYS) <= set(lines[0])


def test_cli_writes_result_summary_and_per_item(files, capsys):
    tmp_path, targets, _ = files
    out = tmp_path / "mtbi_score"
    assert mtbi_score.main(["--targets", str(targets), "--hyp", str(tmp_path / "text"),
                            "--gen_info", str(tmp_path / "gen_info"), "--out_dir", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["data_set"] == "test" and result["counts"]["cut"] == 1
    assert result["instruction_following"]["rate"] == pytest.approx(100 * 6 / 11)
    summary = (out / "summary.txt").read_text()
    assert "Instruction following: 54.55 (6 of 11" in summary and summary in capsys.readouterr().out
    items = [json.loads(line) for line in (out / "per_item.jsonl").read_text().splitlines()]
    assert len(items) == len(EXAMPLES)
    assert next(i for i in items if i["id"] == "u2|first_word/6")["flags"] == ["refusal"]


def test_cli_rejects_an_id_in_two_hypothesis_files(files, capsys):
    tmp_path, targets, _ = files
    assert mtbi_score.main(["--targets", str(targets), "--hyp", str(tmp_path / "text"), str(tmp_path / "text"),
                            "--out_dir", str(tmp_path / "o")]) == 1
    assert "also in an earlier file" in capsys.readouterr().err


def test_an_answer_that_repeats_the_models_own_poor_transcription_is_not_following(tmp_path):
    """A weak model transcribes u1 badly (WER > 50%) and gives that same text to a task prompt: far
    from the true transcript, yet it is what the model does when transcribing, so it counts as
    transcribed, not as following the instruction."""
    poor = "in a begging got crated heave"  # 6 words against 10: WER > 50% against U1
    lines = [line for line in target_lines() if line["id"] in ("u1|transcribe/1", "u1|count_words/1")]
    targets = load_targets(write_jsonl(tmp_path / "t.jsonl", lines))
    hyps = {"u1|transcribe/1": poor, "u1|count_words/1": poor}
    assert not is_transcription(poor, U1)
    result, _ = score_targets(targets, hyps)
    ifr = result["instruction_following"]
    assert (ifr["num_eligible"], ifr["num_followed"], ifr["num_transcribed"]) == (1, 0, 1)
    result, _ = score_targets(targets, {"u1|transcribe/1": poor, "u1|count_words/1": "10"})
    assert result["instruction_following"]["num_followed"] == 1


@pytest.mark.parametrize("text, answer, expected", [
    ("jesus", "disciples", True),
    ("the disciples", "disciples", True),                 # 2 words for 1: still an answer
    ("and the prophets and the prophets", "disciples", False),  # a sentence for one word
    ("12", "11", True),                                    # a wrong number is still a number
    ("twelve words", "11", False),                         # no number where the answer is one
    ("there are 12 words", "there are 11 words", True),
    ("and he said unto them go ye into all", "and he said unto them", True),  # 9 <= max(10, 8)
    ("a b c d e f g h i j k l", "and he said unto them", False),  # 12 > max(10, 8)
])
def test_answer_form(text, answer, expected):
    assert has_answer_form(text, answer) is expected


def test_a_hallucinated_sentence_for_a_one_word_question_is_not_following(tmp_path):
    """The ASR-only baseline's typical failure: a made-up sentence (not a transcription of the
    utterance) for a one-word answer."""
    lines = [line for line in target_lines() if line["id"] == "u1|keyword/1"]
    targets = load_targets(write_jsonl(tmp_path / "t.jsonl", lines))
    result, scores = score_targets(targets, {"u1|keyword/1": "understood and the prophets and the prophets"})
    ifr = result["instruction_following"]
    assert (ifr["num_followed"], ifr["num_transcribed"], ifr["num_off_form"]) == (0, 0, 1)
    assert scores[0].transcribed is False and scores[0].follows is False


def test_grounding_on_extractive_examples(result):
    """Extractive: the LLM answered with words of the transcript (first_word x3, the repeating
    continue, keyword x3, uppercase x2). Grounded: the output is words of the transcript too."""
    tg = result["task_generalization"]
    # unseen: the three keywords (right, wrong but a word of u2, agreeing) and both uppercase outputs
    assert tg["unseen_tasks"]["num_extractive"] == 5 and tg["unseen_tasks"]["grounding"] == pytest.approx(100.0)
    # seen: only "I cannot dig to beg" for u3's first word; not the empty output, the refusal, nor
    # "and darkness was upon ..." for u2 (words that u2 does not have)
    assert tg["seen_tasks"]["num_extractive"] == 4 and tg["seen_tasks"]["grounding"] == pytest.approx(25.0)
    assert "grounding" not in result["llm"]["unseen_tasks"]  # by definition 100% for the LLM itself
