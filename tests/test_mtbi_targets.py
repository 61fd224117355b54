"""MTBI targets: split rules (no held-out wording or task in training targets), the per-utterance
draw, resume after a kill, provenance checks, references, job files, and the full prompt set."""
import json
import random
from pathlib import Path

import pytest

from speechllm.bin import lm_eval_tasks, mtbi_make_targets
from speechllm.data.datadir import DataDirError
from speechllm.llm.text_tasks import TEXT_TASKS, PromptTask, TaskContext, load_prompt_set
from speechllm.mtbi import targets as T
from speechllm.utils.config import ConfigError
from sllm_toys import make_tiny_llm

REPO = Path(__file__).resolve().parents[1]
MINI_PROMPTS = REPO / "egs" / "mini_synth" / "sllm1" / "conf" / "prompts" / "mini_tasks.yaml"
FULL_PROMPTS = REPO / "egs" / "librispeech" / "sllm1" / "conf" / "prompts" / "full_tasks.yaml"
MINI_HELDOUT_TASKS = {"last_word", "keyword"}

TEXT = {
    "utt1": "in the beginning god created the heaven and the earth",
    "utt2": "and the earth was without form and void",
    "utt3": "and god said let there be light",
    "utt4": "the lord is my shepherd i shall not want",
    "utt5": "",
    "utt6": "he leadeth me beside the still waters",
    "utt7": "blessed are the meek for they shall inherit the earth",
}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("llm"), "llama")


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXT.items()))
    return d


def run(llm_dir, data_dir, out, *extra) -> int:
    """The CLI with a tiny bound on new tokens (random models rarely stop by themselves)."""
    return mtbi_make_targets.main(["--data_dir", str(data_dir), "--prompts", str(MINI_PROMPTS), "--llm", llm_dir,
                                   "--out", str(out), "--max_new_tokens_base", "3", "--max_new_tokens_per_word",
                                   "0.25", "--batch_size", "4", *extra])


def records(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --- splits ------------------------------------------------------------------------------
def test_train_targets_hold_only_training_wordings_of_training_tasks(llm_dir, data_dir, tmp_path):
    out = tmp_path / "train.jsonl"
    assert run(llm_dir, data_dir, out, "--splits", "train", "--per_utt", "all") == 0
    recs = records(out)
    prompts = load_prompt_set(MINI_PROMPTS)
    assert {r["wording"] for r in recs} == {w.id for w in prompts.wordings("train")}
    assert not {r["task"] for r in recs} & MINI_HELDOUT_TASKS
    assert {(r["wording_split"], r["task_split"]) for r in recs} == {("train", "train")}
    assert {r["utt_id"] for r in recs} == {u for u, t in TEXT.items() if t}  # empty text skipped
    assert len(T.check_targets_file(out, prompts)) == len(recs)


def test_leak_check_refuses_heldout_wordings_and_tasks_naming_the_id(llm_dir, data_dir, tmp_path):
    out = tmp_path / "all.jsonl"
    assert run(llm_dir, data_dir, out, "--splits", "all", "--per_utt", "all") == 0
    recs = records(out)
    prompts = load_prompt_set(MINI_PROMPTS)
    assert {r["wording"] for r in recs} == {w.id for w in prompts.wordings()}
    T.check_targets_file(out, prompts)  # an evaluation file may hold anything
    heldout_wording = next(r for r in recs if r["wording"] == "repeat/6")
    with pytest.raises(ConfigError, match=r"utt1\|repeat/6: held-out wording 'repeat/6'"):
        T.check_split_leaks([heldout_wording], prompts)
    heldout_task = next(r for r in recs if r["task"] == "keyword")
    with pytest.raises(ConfigError, match=r"held-out task 'keyword'"):
        T.check_split_leaks([heldout_task], prompts)
    # A training file with a held-out line slipped in is refused when read.
    train = tmp_path / "train.jsonl"
    assert run(llm_dir, data_dir, train, "--splits", "train", "--per_utt", "1") == 0
    with train.open("a") as f:
        f.write(json.dumps(heldout_wording) + "\n")
    with pytest.raises(ConfigError, match=r"repeat/6"):
        T.check_targets_file(train, prompts)


def test_heldout_task_asked_for_in_a_training_run_is_an_error(llm_dir, data_dir, tmp_path, capsys):
    assert run(llm_dir, data_dir, tmp_path / "x.jsonl", "--tasks", "repeat,last_word") == 1
    assert "task 'last_word' is held out" in capsys.readouterr().err


def test_exclude_tasks_drops_them(llm_dir, data_dir, tmp_path):
    out = tmp_path / "t.jsonl"
    assert run(llm_dir, data_dir, out, "--per_utt", "all", "--exclude_tasks", "continue,source_book") == 0
    assert {r["task"] for r in records(out)} == {"repeat", "transcribe", "count_words", "first_word", "uppercase"}
    assert json.loads(T.meta_path(out).read_text())["tasks"] == ["repeat", "transcribe", "count_words",
                                                                  "first_word", "uppercase"]


# --- the draw ---------------------------------------------------------------------------
def test_draw_depends_only_on_the_utterance_and_balances_tasks():
    eligible = T.eligible_wordings(load_prompt_set(MINI_PROMPTS), "train")
    draw = T.draw_wordings("utt1", eligible, 4, seed=0)
    assert draw == T.draw_wordings("utt1", eligible, 4, seed=0)
    assert len({w.task for w in draw}) == 4  # up to the number of tasks, one wording per task
    assert T.draw_wordings("utt1", eligible, 4, seed=1) != draw or T.draw_wordings("utt2", eligible, 4, 0) != draw
    many = T.draw_wordings("utt1", eligible, 10, seed=0)
    assert len({w.id for w in many}) == 10 and many[:4] == draw
    assert len(T.draw_wordings("utt1", eligible, 1000, seed=0)) == sum(map(len, eligible.values()))
    # Global random state does not matter.
    random.seed(123)
    assert T.draw_wordings("utt1", eligible, 4, seed=0) == draw


def test_output_is_independent_of_batch_size_and_jobs(llm_dir, data_dir, tmp_path):
    one = tmp_path / "b1.jsonl"
    assert run(llm_dir, data_dir, one, "--batch_size", "1") == 0
    five = tmp_path / "b5.jsonl"
    assert run(llm_dir, data_dir, five, "--batch_size", "5") == 0
    assert one.read_text() == five.read_text()
    jobs = tmp_path / "jobs.jsonl"
    for job in ("1", "2", "3"):
        assert run(llm_dir, data_dir, jobs, "--nj", "3", "--job", job) == 0
    assert mtbi_make_targets.main(["--out", str(jobs), "--combine", "3"]) == 0
    assert jobs.read_text() == one.read_text()
    meta_one, meta_jobs = (json.loads(T.meta_path(p).read_text()) for p in (one, jobs))
    assert T.provenance_diff(meta_one, meta_jobs) == [] and meta_jobs["run"]["combined_jobs"] == 3
    ids = [r["id"] for r in records(one)]
    assert len(ids) == len(set(ids)) == 4 * 6 and ids[0].startswith("utt1|")  # plan order


def test_combine_refuses_missing_or_unfinished_jobs(llm_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert run(llm_dir, data_dir, out, "--nj", "2", "--job", "1") == 0
    assert mtbi_make_targets.main(["--out", str(out), "--combine", "2"]) == 1
    assert "job 2 of 2 has not started" in capsys.readouterr().err
    meta = json.loads(T.meta_path(T.job_path(out, 1)).read_text())
    meta["run"]["complete"] = False
    T.meta_path(T.job_path(out, 2)).write_text(json.dumps({**meta, "job": [2, 2]}))
    assert mtbi_make_targets.main(["--out", str(out), "--combine", "2"]) == 1
    assert "job 2 of 2 is not complete" in capsys.readouterr().err


# --- resume and provenance --------------------------------------------------------------
def test_resume_after_a_kill_gives_the_uninterrupted_file(llm_dir, data_dir, tmp_path, monkeypatch, capsys):
    clean = tmp_path / "clean.jsonl"
    assert run(llm_dir, data_dir, clean) == 0
    killed = tmp_path / "killed.jsonl"
    real, calls = lm_eval_tasks.greedy_generate, []

    def dies_on_third_batch(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(lm_eval_tasks, "greedy_generate", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(llm_dir, data_dir, killed)
    monkeypatch.setattr(lm_eval_tasks, "greedy_generate", real)
    assert len(records(killed)) == 8  # two flushed batches of 4
    with pytest.raises(ConfigError, match="incomplete"):
        T.check_targets_file(killed, load_prompt_set(MINI_PROMPTS))
    lines = killed.read_text().splitlines(keepends=True)  # the kill came while writing line 7
    killed.write_text("".join(lines[:6]) + lines[6][:30])
    with pytest.raises(DataDirError, match=r"killed\.jsonl:7: truncated last line"):
        T.read_targets(killed)
    capsys.readouterr()
    assert run(llm_dir, data_dir, killed) == 0
    err = capsys.readouterr().err
    assert "dropped a truncated last line" in err and "6 of 24 pairs already in" in err
    assert killed.read_text() == clean.read_text()


def test_other_settings_are_refused_unless_overwrite(llm_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert run(llm_dir, data_dir, out, "--seed", "0") == 0
    assert run(llm_dir, data_dir, out, "--seed", "0") == 0  # complete: nothing to do
    capsys.readouterr()
    assert run(llm_dir, data_dir, out, "--seed", "1") == 1
    err = capsys.readouterr().err
    assert "made with other settings (seed: 0 -> 1)" in err and "--overwrite" in err
    assert run(llm_dir, data_dir, out, "--seed", "1", "--overwrite") == 0
    assert json.loads(T.meta_path(out).read_text())["seed"] == 1
    T.meta_path(out).unlink()
    assert run(llm_dir, data_dir, out) == 1
    assert "exists without t.jsonl.meta.json" in capsys.readouterr().err


def test_meta_records_the_llm_prompts_and_decoding(llm_dir, data_dir, tmp_path):
    out = tmp_path / "t.jsonl"
    assert run(llm_dir, data_dir, out, "--system_prompt", "Be brief.") == 0
    meta = json.loads(T.meta_path(out).read_text())
    assert meta["llm"] == llm_dir and meta["llm_fingerprint"] == T.llm_fingerprint(llm_dir)
    assert meta["prompts_sha256"] == T.file_sha256(MINI_PROMPTS) and meta["system_prompt"] == "Be brief."
    assert meta["decoding"] == {"mode": "greedy", "dtype": "float32", "max_new_tokens_base": 3,
                                "max_new_tokens_per_word": 0.25}
    assert meta["per_utt"] == 4 and meta["splits"] == "train" and meta["run"]["complete"]
    assert {"git_commit", "speechllm_version", "device", "batch_size"} <= set(meta["run"])


def test_fingerprint_changes_with_the_weights(llm_dir, tmp_path):
    other = make_tiny_llm(tmp_path / "other", "llama", seed=1)
    assert T.llm_fingerprint(other) != T.llm_fingerprint(llm_dir)
    assert T.llm_fingerprint("org/model") == "hub:org/model@unknown"


# --- records ----------------------------------------------------------------------------
def test_records_carry_prompt_transcript_and_references(llm_dir, data_dir, tmp_path):
    out = tmp_path / "t.jsonl"
    assert run(llm_dir, data_dir, out, "--splits", "all", "--per_utt", "all") == 0
    recs = {r["id"]: r for r in records(out)}
    r = recs["utt4|transcribe/1"]
    assert r["task"] == "transcribe" and r["answer_task"] == "repeat" and r["utt_id"] == "utt4"
    assert r["prompt"] == "Transcribe the audio: {text}" and r["transcript"] == TEXT["utt4"]
    assert r["reference"] == TEXT["utt4"] and isinstance(r["response"], str) and isinstance(r["stopped"], bool)
    for task in ("count_words", "first_word", "last_word", "uppercase", "keyword"):
        assert recs[f"utt4|{task}/1"]["reference"] == TEXT_TASKS[task](TEXT["utt4"], TaskContext())
    # continue and source_book need the next verse / the book: no reference from a transcript alone.
    assert recs["utt4|continue/1"]["reference"] is None and recs["utt4|source_book/1"]["reference"] is None
    assert set(recs["utt4|keyword/6"]) == {"id", "utt_id", "task", "answer_task", "wording", "wording_split",
                                           "task_split", "prompt", "transcript", "response", "reference", "stopped"}
    assert recs["utt4|keyword/6"]["task_split"] == "heldout" and recs["utt4|repeat/6"]["wording_split"] == "heldout"


def test_a_task_without_an_answer_function_has_no_reference():
    task = PromptTask(name="paraphrase", answer=None, split="train", wordings=())
    assert T.reference_answer(task, "and god said") is None


def test_answers_end_at_a_stop_token_or_at_their_own_bound(llm_dir):
    import torch

    from speechllm.llm.loading import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(llm_dir).eval(), load_tokenizer(llm_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "say amen"}], tokenize=False,
                                     add_generation_prompt=True)
    answers = lm_eval_tasks.greedy_generate(model, tok, [prompt, prompt + " x"], [6, 2], "cpu")
    for (_, n, stopped), bound in zip(answers, [6, 2]):
        assert n <= bound and (stopped or n == bound)
    with torch.no_grad():
        first = model(**tok(prompt, add_special_tokens=False, return_tensors="pt")).logits[0, -1].argmax().item()
    assert lm_eval_tasks.greedy_generate(model, tok, [prompt], [6], "cpu", stop_ids=[first]) == [("", 0, True)]


# --- the full prompt set ----------------------------------------------------------------
def test_full_prompt_set_loads_with_its_documented_splits():
    prompts = load_prompt_set(FULL_PROMPTS)
    assert len(prompts.tasks) >= 8 and all(len(t.wordings) >= 5 for t in prompts.tasks.values())
    heldout = {n for n, t in prompts.tasks.items() if t.split == "heldout"}
    assert heldout == {"translate_de", "question", "last_word"}
    for name, task in prompts.tasks.items():
        if name not in heldout:
            splits = [w.split for w in task.wordings]
            assert splits.count("heldout") >= 1 and splits.count("train") >= 4, name
    assert {"transcribe", "paraphrase", "continuation", "keywords", "topic", "sentiment", "summarize",
            "translate_fr", "count_words"} <= set(prompts.tasks)
    answers = {n: t.answer for n, t in prompts.tasks.items()}
    assert answers["transcribe"] == "repeat" and answers["count_words"] == "count_words"
    assert answers["last_word"] == "last_word" and answers["paraphrase"] is None
    train = T.eligible_wordings(prompts, "train")
    assert not set(train) & heldout and all(w.split == "train" for ws in train.values() for w in ws)
    assert T.reference_answer(prompts.tasks["translate_fr"], "and god said") is None
    assert T.reference_answer(prompts.tasks["count_words"], "and god said") == "3"


def test_read_targets_names_the_line_of_a_bad_record(tmp_path):
    path = tmp_path / "t.jsonl"
    good = {"id": "u1|repeat/1", "prompt": "Repeat: {text}"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"id": "u2|repeat/1"}) + "\n")
    assert [r["id"] for r in T.read_targets(path)] == ["u1|repeat/1", "u2|repeat/1"]  # blank line skipped
    with pytest.raises(DataDirError, match=r"t\.jsonl:3: missing key\(s\) \['prompt'\]"):
        T.read_targets(path, required=("id", "prompt"))
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DataDirError, match=r"t\.jsonl:2: id 'u1\|repeat/1' already used on line 1"):
        T.read_targets(path)
    path.write_text("\n")
    assert T.read_targets(path) == []  # a run that wrote nothing yet
    with pytest.raises(DataDirError, match=r"t\.jsonl: no examples"):
        T.read_targets(path, allow_empty=False)
    path.write_text(json.dumps({"id": "u1", "prompt": "no placeholder"}) + "\n")
    with pytest.raises(DataDirError, match=r"t\.jsonl:1: 'prompt' must hold \{text\} once"):
        T.read_targets(path)
