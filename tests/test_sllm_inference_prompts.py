"""``sllm_inference --prompts_jsonl``: one decoded example per line of an MTBI targets file (its
own prompt, its utterance's audio), in jobs, with per-task length floors; the plain mode as before."""
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from asr_toys import INPUT_SIZE, tiny_config
from sllm_toys import make_tiny_llm
from speechllm.bin import sllm_inference
from speechllm.tasks import sllm

WORDING = "Transcribe the audio: {text}"
UTTS = {"a1": 40, "a2": 61, "b1": 52}  # utterance -> frames
PROMPTS = {"transcribe/1": WORDING, "count_words/2": "Count the words: {text}",
           "continue/1": "{text}\nWhat comes next?"}


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """An untrained tiny speech LLM (exp dir with config.yaml + checkpoint) and a feats data dir."""
    root = tmp_path_factory.mktemp("sllm_prompts")
    config = {"input_size": INPUT_SIZE, "encoder": "conformer", "encoder_conf": tiny_config()["encoder_conf"],
              "projector": "linear", "projector_conf": {"downsample": 2, "hidden_size": 32},
              "llm": make_tiny_llm(root / "llm"), "lora": None, "freeze": ["llm.*"],
              "prompts": {"wordings": [WORDING]}}
    (root / "exp").mkdir()
    (root / "exp" / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    torch.save({"model": sllm.build_model(config).checkpoint_state_dict()}, root / "exp" / "model.pt")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as w:
        for utt, frames in UTTS.items():
            w(utt, rng.standard_normal((frames, INPUT_SIZE)).astype(np.float32))
    return root


def targets(path: Path, prompts: dict[str, str] = PROMPTS, ids_are_utts: bool = False) -> Path:
    lines = [{"id": utt if ids_are_utts else f"{utt}|{wid}", "utt_id": utt, "task": wid.split("/")[0],
              "answer_task": "repeat" if wid.startswith("transcribe") else wid.split("/")[0],
              "wording": wid, "prompt": text} for utt in UTTS for wid, text in prompts.items()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run(exp: Path, out: Path, *extra: str) -> int:
    return sllm_inference.main(["--exp_dir", str(exp / "exp"), "--checkpoint", str(exp / "exp" / "model.pt"),
                                "--data_dir", str(exp / "data"), "--output_dir", str(out),
                                "--max_new_tokens_base", "2", "--max_new_tokens_per_second", "10", *extra])


def read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


def test_one_line_per_example_over_jobs(exp, tmp_path):
    jsonl = targets(tmp_path / "t.jsonl")
    for job in ("1", "2"):
        assert run(exp, tmp_path / "out", "--prompts_jsonl", str(jsonl), "--nj", "2", "--job", job) == 0
    text = [read_ids(tmp_path / "out" / f"text.{j}") for j in (1, 2)]
    info = [read_ids(tmp_path / "out" / f"gen_info.{j}") for j in (1, 2)]
    expected = sorted(f"{u}|{w}" for u in UTTS for w in PROMPTS)
    assert sorted(text[0] + text[1]) == expected and info == text
    assert {i.split("|")[0] for i in text[0]}.isdisjoint({i.split("|")[0] for i in text[1]})  # whole utterances
    saved = yaml.safe_load((tmp_path / "out" / "decode_config.yaml").read_text())
    assert saved["prompts_jsonl"] == str(jsonl)


def test_batches_decode_like_single_examples(exp, tmp_path):
    jsonl = targets(tmp_path / "t.jsonl")
    assert run(exp, tmp_path / "b8", "--prompts_jsonl", str(jsonl), "--batch_size", "8") == 0
    assert run(exp, tmp_path / "b1", "--prompts_jsonl", str(jsonl), "--batch_size", "1") == 0
    assert (tmp_path / "b8" / "text.1").read_text() == (tmp_path / "b1" / "text.1").read_text()


def test_plain_mode_equals_the_same_prompt_given_per_line(exp, tmp_path):
    jsonl = targets(tmp_path / "t.jsonl", {"transcribe/1": WORDING}, ids_are_utts=True)
    assert run(exp, tmp_path / "plain") == 0
    assert run(exp, tmp_path / "jsonl", "--prompts_jsonl", str(jsonl)) == 0
    assert read_ids(tmp_path / "plain" / "text.1") == sorted(UTTS)
    for name in ("text.1", "gen_info.1"):
        assert (tmp_path / "plain" / name).read_text() == (tmp_path / "jsonl" / name).read_text()


def test_task_floor_raises_the_length_bound(exp, tmp_path):
    jsonl = targets(tmp_path / "t.jsonl")
    assert run(exp, tmp_path / "out", "--prompts_jsonl", str(jsonl), "--max_new_tokens_per_second", "0",
               "--max_new_tokens_base", "1", "--max_new_tokens_min", "continue=6") == 0
    tokens = {k: int(n) for k, n, _ in (line.split() for line in (tmp_path / "out" / "gen_info.1").read_text()
                                        .splitlines())}
    assert all(n <= 1 for k, n in tokens.items() if "continue" not in k)
    assert all(n <= 6 for k, n in tokens.items()) and max(n for k, n in tokens.items() if "continue" in k) > 1


def test_task_floor_parsing():
    assert sllm_inference.parse_task_bounds("continue=48, count_words=4") == {"continue": 48, "count_words": 4}
    assert sllm_inference.parse_task_bounds({"continue": 48}) == {"continue": 48}
    assert sllm_inference.parse_task_bounds(None) is None
    opts = {"max_new_tokens_base": 8, "max_new_tokens_per_second": 8.0, "max_new_tokens_min": {"repeat": 40}}
    assert sllm_inference.length_bound(opts, 1.0, ("transcribe", "repeat")) == 40
    assert sllm_inference.length_bound(opts, 5.0, ("transcribe", "repeat")) == 48  # the audio bound is larger
    assert sllm_inference.length_bound(opts, 1.0, ("count_words",)) == 16


def test_bad_jsonl_and_bounds_are_clear_errors(exp, tmp_path, capsys):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"id": "zz|transcribe/1", "utt_id": "zz", "prompt": WORDING}) + "\n")
    assert run(exp, tmp_path / "o", "--prompts_jsonl", str(jsonl)) == 1
    assert "1 of its utterances are not in" in capsys.readouterr().err
    jsonl.write_text(json.dumps({"id": "a1|x", "utt_id": "a1", "prompt": "no placeholder"}) + "\n")
    assert run(exp, tmp_path / "o", "--prompts_jsonl", str(jsonl)) == 1
    assert "t.jsonl:1: 'prompt' must hold {text} once" in capsys.readouterr().err
    assert run(exp, tmp_path / "o", "--max_new_tokens_min", "continue:4") == 1
    assert "expected task=N" in capsys.readouterr().err
