"""MTBI training: the collate's example mix and interleaving, the token-level KL term, and a
smoke run of the whole chain (align -> targets -> train -> decode with task prompts -> score)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from asr_toys import INPUT_SIZE, tiny_config, write_feats_dir, write_model_dir
from sllm_toys import make_tiny_llm, tiny_speech_llm
from speechllm.align import WordTime
from speechllm.bin import align_words, mtbi_make_targets, mtbi_score, sllm_inference, train
from speechllm.llm.loading import load_tokenizer
from speechllm.llm.prompting import AUDIO_PLACEHOLDER, render_prompt_pieces
from speechllm.llm.text_tasks import load_prompt_set
from speechllm.models.speech_llm import kl_divergence
from speechllm.mtbi.collate import MTBICollate, MTBIConfig, load_imitation_targets
from speechllm.mtbi.interleave import InterleaveConfig
from speechllm.utils.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "egs/mini_synth/sllm1/conf/prompts/mini_tasks.yaml"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(autouse=True)
def tiny_fbank_encoder(monkeypatch):
    from sllm_toys import TinyFbankEncoder
    from speechllm.nets.encoders import ENCODERS

    monkeypatch.setitem(ENCODERS, "tiny_fbank", TinyFbankEncoder)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("mtbi_llm"))


# ----------------------------------------------------------------------------------------
# Token-level imitation
# ----------------------------------------------------------------------------------------
def test_kl_divergence_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(5, 11)
    assert kl_divergence(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(a, a + torch.randn(5, 11)).item() > 0
    p, q = a.log_softmax(-1), (a * 2).log_softmax(-1)
    by_hand = (p.exp() * (p - q)).sum(-1).mean()
    assert kl_divergence(a, a * 2).item() == pytest.approx(by_hand.item(), rel=1e-5)


def _speech_as_text_batch(model, tokenizer, transcript: str, response: str) -> dict:
    """One sequence whose audio slot will hold exactly the embeddings of the transcript's tokens
    in the text prompt, so the speech path and the text path see the same input."""
    from speechllm.llm.prompting import response_ids

    wording = "Repeat this sentence: {text}"
    pieces = render_prompt_pieces(tokenizer, wording.replace("{text}", AUDIO_PLACEHOLDER), n_audio=1)
    teacher = render_prompt_pieces(tokenizer, wording.replace("{text}", transcript), n_audio=0).text_ids[0]
    head, tail = pieces.text_ids
    assert torch.equal(teacher[:len(head)], head) and torch.equal(teacher[len(teacher) - len(tail):], tail)
    middle = teacher[len(head):len(teacher) - len(tail)]
    embed = model.llm.get_input_embeddings()
    # the speech path returns the text embeddings
    model.audio_embeddings = lambda batch, encoded=None, frame_logits=None: [[embed(middle)]]
    return {"utt_ids": ["u"], "feats": torch.zeros(1, 8, 8), "feats_lens": torch.tensor([8]),
            "prompts": [pieces], "audio_spans": [[(0, 0, -1)]],
            "response_ids": [response_ids(tokenizer, wording.replace("{text}", AUDIO_PLACEHOLDER), response)],
            "teacher_prompt_ids": [teacher]}


def test_kl_term_is_zero_when_the_speech_input_equals_the_text_embedding_path(llm_dir):
    model = tiny_speech_llm(llm_dir, lora=LORA)
    model.kl_weight = 1.0
    batch = _speech_as_text_batch(model, model.tokenizer, "in the beginning god created", "three")
    loss, stats = model(batch)
    assert stats["loss_kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA B starts at zero: model == frozen LLM
    assert loss.item() == pytest.approx(stats["loss_ce"], abs=1e-5)
    with torch.no_grad():  # a trained adapter moves the model away from the frozen LLM
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    loss, stats = model(batch)
    assert stats["loss_kl"] > 1e-3
    loss.backward()  # the KL term trains the adapters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


def test_kl_term_needs_a_frozen_llm(llm_dir):
    model = tiny_speech_llm(llm_dir)  # no LoRA, LLM trainable
    model.kl_weight = 1.0
    batch = _speech_as_text_batch(model, model.tokenizer, "in the beginning god created", "in")
    with pytest.raises(ConfigError, match="frozen LLM"):
        model(batch)


# ----------------------------------------------------------------------------------------
# The collate
# ----------------------------------------------------------------------------------------
def _record(utt: str, task: str, wid: int, response: str, answer_task: str | None = None) -> dict:
    prompts = load_prompt_set(PROMPTS)
    wording = next(w for w in prompts.tasks[task].wordings if w.id == f"{task}/{wid}")
    return {"id": f"{utt}|{task}/{wid}", "utt_id": utt, "task": task, "answer_task": answer_task or task,
            "wording": wording.id, "prompt": wording.text, "response": response}


def _items(n: int = 4) -> list[dict]:
    return [{"utt_id": f"u{i}", "feats": torch.randn(60 + 10 * i, 8), "text": "in the beginning god created"}
            for i in range(n)]


def test_collate_mixes_transcription_and_imitation_by_ratio(llm_dir):
    tok = load_tokenizer(llm_dir)
    prompts = load_prompt_set(PROMPTS)
    targets = {f"u{i}": [_record(f"u{i}", "count_words", 1, "5")] for i in range(4)}
    only_text = MTBICollate(tok, MTBIConfig(targets="t", transcribe_ratio=1.0), prompts, targets)
    batch = only_text(_items())
    answers = [tok.decode(r) for r in batch["response_ids"]]
    assert all(a.startswith("in the beginning god created") for a in answers)
    only_tasks = MTBICollate(tok, MTBIConfig(targets="t", transcribe_ratio=0.0), prompts, targets)
    batch = only_tasks(_items())
    assert all(tok.decode(r).startswith("5") for r in batch["response_ids"])
    assert batch["audio_spans"] == [[(i, 0, -1)] for i in range(4)] and "teacher_prompt_ids" not in batch
    half = MTBICollate(tok, MTBIConfig(targets="t", transcribe_ratio=0.5), prompts, targets)
    for epoch in range(1, 51):
        half.set_epoch(epoch)
        half(_items())
    assert 70 <= half.counts["transcribe"] <= 130 and half.counts["transcribe"] + half.counts["count_words"] == 200


def test_collate_draws_depend_on_seed_epoch_and_utterance_only(llm_dir):
    # so a run resumed mid-epoch, or loading with other workers or batches, gets the same examples
    tok = load_tokenizer(llm_dir)
    prompts = load_prompt_set(PROMPTS)
    words = "in the beginning god created".split()
    align = {f"u{i}": [WordTime(w, 0.1 + 0.1 * j, 0.2 + 0.1 * j) for j, w in enumerate(words)] for i in range(4)}
    targets = {f"u{i}": [_record(f"u{i}", task, 1, str(i)) for task in ("count_words", "first_word", "uppercase")]
               for i in range(4)}
    config = MTBIConfig(targets="t", transcribe_ratio=0.3, word_align="a", interleave_prob=0.5,
                        interleave={"ratio": 0.5, "span_words": [1, 2]})

    def examples(seed: int, epoch: int, order: list[int], batches: int) -> dict[str, tuple]:
        collate = MTBICollate(tok, config, prompts, targets, align, enc_lens=lambda n: n // 2, frame_shift=0.02,
                              seed=seed)
        collate.set_epoch(epoch)
        items = [_items()[i] for i in order]
        out = {}
        for part in range(batches):
            batch = collate(items[part::batches])
            for n, utt in enumerate(batch["utt_ids"]):
                text = tok.decode(torch.cat(batch["prompts"][n].text_ids))
                spans = [(e - s) if e != -1 else -1 for _, s, e in batch["audio_spans"][n]]
                out[utt] = (text, spans, tok.decode(batch["response_ids"][n]))
        return out

    first = examples(0, 1, [0, 1, 2, 3], 1)
    assert examples(0, 1, [3, 1, 0, 2], 2) == first  # other batches, other order: the same examples
    random.seed(123)  # the global generator plays no part
    assert examples(0, 1, [2, 0, 3, 1], 4) == first
    assert examples(0, 2, [0, 1, 2, 3], 1) != first  # a new epoch draws anew
    assert examples(1, 1, [0, 1, 2, 3], 1) != first


def test_collate_interleaves_and_gives_the_teacher_the_text_prompt(llm_dir):
    tok = load_tokenizer(llm_dir)
    prompts = load_prompt_set(PROMPTS)
    words = "in the beginning god created".split()
    align = {f"u{i}": [WordTime(w, 0.1 + 0.1 * j, 0.2 + 0.1 * j) for j, w in enumerate(words)] for i in range(4)}
    targets = {f"u{i}": [_record(f"u{i}", "first_word", 1, "in")] for i in range(4)}
    config = MTBIConfig(targets="t", transcribe_ratio=0.0, word_align="a", interleave_prob=1.0,
                        interleave={"ratio": 0.5, "span_words": [1, 2]}, kl_weight=0.5)
    collate = MTBICollate(tok, config, prompts, targets, align, enc_lens=lambda n: n // 2, frame_shift=0.02)
    batch = collate(_items())
    for n, (prompt, spans) in enumerate(zip(batch["prompts"], batch["audio_spans"])):
        assert prompt.n_audio == len(spans) >= 1 and all(u == n for u, _, _ in spans)
        assert all(0 <= s < e <= (60 + 10 * n) // 2 for _, s, e in spans if e != -1)
        teacher = tok.decode(batch["teacher_prompt_ids"][n])
        assert "What is the first word of: in the beginning god created" in teacher
    texts = [tok.decode(torch.cat(p.text_ids)) for p in batch["prompts"]]
    assert any(w in t for t in texts for w in words)  # some words stay text
    assert collate.counts["interleaved"] == 4


def test_mtbi_config_errors():
    with pytest.raises(ConfigError, match="mtbi.targets"):
        MTBIConfig(transcribe_ratio=0.5)
    with pytest.raises(ConfigError, match="word_align"):
        MTBIConfig(targets="t", interleave_prob=0.5)
    with pytest.raises(ConfigError, match="unknown option"):
        MTBIConfig.from_dict({"targets": "t", "ratio": 1})
    with pytest.raises(ConfigError, match="interleave"):
        MTBIConfig(targets="t", interleave={"mode": "tokens"})
    assert MTBIConfig(transcribe_ratio=1.0).interleave_config == InterleaveConfig()


# ----------------------------------------------------------------------------------------
# Smoke run of the chain on a tiny set
# ----------------------------------------------------------------------------------------
TEXTS = ["in the beginning god created the heaven and the earth", "and god said let there be light",
         "and there was light", "the lord is my shepherd i shall not want", "and god saw the light",
         "blessed are the meek", "jesus wept and the people saw", "let us go unto the house of the lord"]


def _data_dir(path: Path, utts: dict[str, str], seed: int) -> Path:
    write_feats_dir(path, {u: 8 * len(t) + 20 for u, t in sorted(utts.items())}, seed=seed)
    (path / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(utts.items())))
    return path


def test_align_targets_train_decode_score_chain(tmp_path, llm_dir, capfd):
    # The ASR model whose CTC head aligns the words and whose encoder the speech LLM reuses.
    asr_dir = tmp_path / "asr"
    asr_config = tiny_config()
    write_model_dir(asr_dir, TEXTS * 3, asr_config, model_type="char", vocab_size=500)
    train_dir = _data_dir(tmp_path / "train", {f"tr{i}": t for i, t in enumerate(TEXTS)}, 0)
    test_dir = _data_dir(tmp_path / "test", {f"te{i}": t for i, t in enumerate(TEXTS[:3])}, 1)
    assert align_words.main(["--model_dir", str(asr_dir), "--data_dir", str(train_dir)]) == 0

    targets = tmp_path / "mtbi" / "train_targets.jsonl"
    common = ["--prompts", str(PROMPTS), "--llm", llm_dir, "--max_new_tokens_base", "6", "--batch_size", "4"]
    assert mtbi_make_targets.main(["--data_dir", str(train_dir), "--out", str(targets), "--splits", "train",
                                   "--per_utt", "3"] + common) == 0
    test_targets = tmp_path / "mtbi" / "test_targets.jsonl"
    assert mtbi_make_targets.main(["--data_dir", str(test_dir), "--out", str(test_targets), "--splits", "all",
                                   "--per_utt", "4"] + common) == 0
    by_utt = load_imitation_targets(targets, load_prompt_set(PROMPTS), None)
    assert all(r["answer_task"] != "repeat" for rs in by_utt.values() for r in rs)

    config = {
        "input_size": INPUT_SIZE, "encoder": "conformer", "encoder_conf": asr_config["encoder_conf"],
        "encoder_init": str(asr_dir / "model.pt"), "specaug": True,
        "specaug_conf": {"num_freq_masks": 1, "max_freq_width": 2, "num_time_masks": 1, "max_time_width": 4},
        "projector": "linear", "projector_conf": {"downsample": 2, "hidden_size": 32},
        "llm": llm_dir, "lora": LORA, "freeze": ["encoder.*"],
        "prompts": {"file": str(PROMPTS), "task": "transcribe"},
        "mtbi": {"targets": str(targets), "transcribe_ratio": 0.3, "word_align": str(train_dir / "word_align"),
                 "interleave_prob": 0.5, "interleave": {"ratio": 0.5, "span_words": [1, 2]}, "kl_weight": 0.5},
        "max_epoch": 2, "batch_bins": 400, "num_workers": 0, "optim": "adamw", "optim_conf": {"lr": 0.003},
        "keep_nbest_models": 1, "log_interval": 1,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    exp = tmp_path / "exp"
    assert train.main(["--task", "sllm", "--config", str(tmp_path / "train.yaml"), "--train_data_dir",
                       str(train_dir), "--valid_data_dir", str(test_dir), "--exp_dir", str(exp)]) == 0
    log = capfd.readouterr().err
    assert "loss_kl" in log and "imitation targets for 8 utterances" in log
    assert "interleaving: 8 aligned utterances" in log

    out = tmp_path / "decode"
    assert sllm_inference.main(["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.best.pt"),
                                "--data_dir", str(test_dir), "--output_dir", str(out), "--prompts_jsonl",
                                str(test_targets), "--max_new_tokens_base", "4", "--max_new_tokens_per_second",
                                "0"]) == 0
    hyp_ids = [line.split(" ", 1)[0] for line in (out / "text.1").read_text().splitlines()]
    target_ids = [json.loads(line)["id"] for line in test_targets.read_text().splitlines()]
    assert sorted(hyp_ids) == sorted(target_ids)
    assert mtbi_score.main(["--targets", str(test_targets), "--hyp", str(out / "text.1"),
                            "--out_dir", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "result.json").read_text())
    assert result["num_items"] == len(target_ids) and result["instruction_following"] is not None
