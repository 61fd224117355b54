"""The mini LM pipeline: data prep (withheld verses), tokenizer and chat template, loss masking,
training through ``speechllm.bin.train --task lm``, export to a HF directory, task evaluation.

The KJV comes from a stand-in ``bible`` script printing 50 verses, so no Debian package is needed.
"""
import json
import stat
from pathlib import Path

import pytest
import torch
import yaml

from speechllm.bin import lm_eval_tasks, lm_export, lm_prepare_data, train
from speechllm.corpus.kjv_text import parse_bible_output
from speechllm.llm.mini_lm import IGNORE_INDEX, SPECIAL_TOKENS, encode_chat, encode_text
from speechllm.tasks.lm import LMDataset, collate_lm, load_tokenizer, read_jsonl
from speechllm.utils.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "egs" / "mini_synth" / "sllm1" / "conf" / "prompts" / "mini_tasks.yaml"
CONF = REPO / "egs" / "mini_synth" / "sllm1" / "conf" / "lm_pretrain.yaml"

KJV = """\
Psa23:1 The LORD is my shepherd; I shall not want.
Psa23:2 He maketh me to lie down in green pastures: he leadeth me beside the still waters.
Psa23:3 He restoreth my soul: he leadeth me in the paths of righteousness for his name's sake.
Psa23:4 Yea, though I walk through the valley of the shadow of death, I will fear no evil: for thou art with me; thy rod and thy staff they comfort me.
Psa23:5 Thou preparest a table before me in the presence of mine enemies: thou anointest my head with oil; my cup runneth over.
Psa23:6 Surely goodness and mercy shall follow me all the days of my life: and I will dwell in the house of the LORD for ever.
Psa121:1 I will lift up mine eyes unto the hills, from whence cometh my help.
Psa121:2 My help cometh from the LORD, which made heaven and earth.
Psa121:3 He will not suffer thy foot to be moved: he that keepeth thee will not slumber.
Psa121:4 Behold, he that keepeth Israel shall neither slumber nor sleep.
Psa121:5 The LORD is thy keeper: the LORD is thy shade upon thy right hand.
Psa121:6 The sun shall not smite thee by day, nor the moon by night.
Psa121:7 The LORD shall preserve thee from all evil: he shall preserve thy soul.
Psa121:8 The LORD shall preserve thy going out and thy coming in from this time forth, and even for evermore.
Prv3:1 My son, forget not my law; but let thine heart keep my commandments:
Prv3:2 For length of days, and long life, and peace, shall they add to thee.
Prv3:3 Let not mercy and truth forsake thee: bind them about thy neck; write them upon the table of thine heart:
Prv3:4 So shalt thou find favour and good understanding in the sight of God and man.
Prv3:5 Trust in the LORD with all thine heart; and lean not unto thine own understanding.
Prv3:6 In all thy ways acknowledge him, and he shall direct thy paths.
Prv3:7 Be not wise in thine own eyes: fear the LORD, and depart from evil.
Prv3:8 It shall be health to thy navel, and marrow to thy bones.
Prv3:9 Honour the LORD with thy substance, and with the firstfruits of all thine increase:
Prv3:10 So shall thy barns be filled with plenty, and thy presses shall burst out with new wine.
Prv3:11 My son, despise not the chastening of the LORD; neither be weary of his correction:
Prv3:12 For whom the LORD loveth he correcteth; even as a father the son in whom he delighteth.
Mat5:3 Blessed are the poor in spirit: for theirs is the kingdom of heaven.
Mat5:4 Blessed are they that mourn: for they shall be comforted.
Mat5:5 Blessed are the meek: for they shall inherit the earth.
Mat5:6 Blessed are they which do hunger and thirst after righteousness: for they shall be filled.
Mat5:7 Blessed are the merciful: for they shall obtain mercy.
Mat5:8 Blessed are the pure in heart: for they shall see God.
Mat5:9 Blessed are the peacemakers: for they shall be called the children of God.
Mat5:10 Blessed are they which are persecuted for righteousness' sake: for theirs is the kingdom of heaven.
Mat5:11 Blessed are ye, when men shall revile you, and persecute you, and shall say all manner of evil against you falsely, for my sake.
Mat5:12 Rejoice, and be exceeding glad: for great is your reward in heaven: for so persecuted they the prophets which were before you.
John1:1 In the beginning was the Word, and the Word was with God, and the Word was God.
John1:2 The same was in the beginning with God.
John1:3 All things were made by him; and without him was not any thing made that was made.
John1:4 In him was life; and the life was the light of men.
John1:5 And the light shineth in darkness; and the darkness comprehended it not.
John1:6 There was a man sent from God, whose name was John.
John1:7 The same came for a witness, to bear witness of the Light, that all men through him might believe.
John1:8 He was not that Light, but was sent to bear witness of that Light.
John1:9 That was the true Light, which lighteth every man that cometh into the world.
John1:10 He was in the world, and the world was made by him, and the world knew him not.
John1:11 He came unto his own, and his own received him not.
John1:12 But as many as received him, to them gave he power to become the sons of God, even to them that believe on his name:
John1:13 Which were born, not of blood, nor of the will of the flesh, nor of the will of man, but of God.
John1:14 And the Word was made flesh, and dwelt among us, (and we beheld his glory, the glory as of the only begotten of the Father,) full of grace and truth.
"""
VERSES = {v.ref: v for v in parse_bible_output(KJV.splitlines())}
# Speech dev/test transcripts: withheld by utterance id (the verse at its end) or, for an id
# without a verse, by an identical transcript.
EXCLUDE_TEXT = "\n".join([
    f"espeak_enus_f4-Psa023_004 {VERSES['Psa23:4'].transcript}",
    f"festival_kal-Prv003_005 {VERSES['Prv3:5'].transcript}",
    f"sp0.9-espeak_enus_m1-Mat005_008_r1 {VERSES['Mat5:8'].transcript}",
    f"real_speech-utt0001 {VERSES['John1:2'].transcript}",
]) + "\n"
EXCLUDED = ["Psa23:4", "Prv3:5", "Mat5:8", "John1:2"]
TINY_MODEL = ["--model_conf.hidden_size", "32", "--model_conf.num_hidden_layers", "1",
              "--model_conf.num_attention_heads", "2", "--model_conf.num_key_value_heads", "1",
              "--model_conf.intermediate_size", "64"]


SCRAMBLED = ("--scrambled_per_sentence", "0.5")


def prepare(out_dir: Path, bible: Path, exclude: Path, *extra: str) -> Path:
    rc = lm_prepare_data.main([
        "--prompts", str(PROMPTS), "--out_dir", str(out_dir), "--exclude", str(exclude),
        "--bible_cmd", str(bible), "--books", "Psa,Prv,Mat,John", "--num_eval", "4", "--num_valid", "3",
        "--num_eval_seen", "3", "--num_valid_chunks", "1", "--chunk_words", "40", "--max_plain_chunks", "-1",
        "--tasks_per_sentence", "3", "--scrambled_per_sentence", "0", "--vocab_size", "400", *extra,
    ])
    assert rc == 0
    return out_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("kjv")
    bible = d / "bible"
    (d / "kjv.txt").write_text(KJV, encoding="utf-8")
    bible.write_text(f"#!/bin/sh\ncat '{d / 'kjv.txt'}'\n")
    bible.chmod(bible.stat().st_mode | stat.S_IXUSR)
    exclude = d / "text"
    exclude.write_text(EXCLUDE_TEXT, encoding="utf-8")
    return bible, exclude


@pytest.fixture(scope="module")
def data(tmp_path_factory, inputs):
    return prepare(tmp_path_factory.mktemp("lm_data"), *inputs, *SCRAMBLED)


@pytest.fixture(scope="module")
def tokenizer(data):
    return load_tokenizer(data / "tokenizer")


def training_strings(path: Path) -> list[str]:
    """Every text of a JSONL that a model trains on (plain text, prompts, answers), lowercased."""
    out = []
    for ex in read_jsonl(path):
        out += [ex["text"]] if ex["kind"] == "text" else [m["content"] for m in ex["messages"]]
    return [s.lower() for s in out]


# --- data prep --------------------------------------------------------------------------
def test_excluded_verses_appear_nowhere_in_training_data(data):
    strings = training_strings(data / "train.jsonl") + training_strings(data / "valid.jsonl")
    for ref in EXCLUDED:
        transcript = VERSES[ref].transcript
        assert not any(transcript in s for s in strings), ref  # nor as a continue answer or uppercased
    info = yaml.safe_load((data / "prep_info.yaml").read_text())
    assert info["withheld"]["excluded_verses"] == 4
    assert info["withheld"]["exclusion_lines"] == {"lines": 4, "matched": 4}


def test_without_exclusion_the_same_verses_are_used(tmp_path, inputs):
    """The check above is not vacuous: the withheld verses do appear when nothing is excluded."""
    empty = tmp_path / "empty_text"
    empty.write_text("")
    d = prepare(tmp_path / "all", inputs[0], empty)
    strings = training_strings(d / "train.jsonl")
    held = {ex["ref"] for name in ("valid.jsonl", "eval.jsonl") for ex in read_jsonl(d / name) if "ref" in ex}
    for ref in EXCLUDED:  # unless drawn as a valid/eval sentence of this run
        assert ref in held or any(VERSES[ref].transcript in s for s in strings), ref


def test_eval_sentences_are_unseen_and_cover_every_task(data):
    evals = read_jsonl(data / "eval.jsonl")
    strings = training_strings(data / "train.jsonl")
    refs = {ex["ref"] for ex in evals}
    assert len(refs) == 4 and not refs & set(EXCLUDED)
    for ref in refs:
        assert not any(VERSES[ref].transcript in s for s in strings), ref
    tasks = {ex["task"] for ex in evals}
    assert {"repeat", "transcribe", "count_words", "uppercase", "keyword", "source_book"} <= tasks
    assert {ex["split"] for ex in evals} == {"train", "heldout"}
    assert all(ex["answer_task"] == "repeat" for ex in evals if ex["task"] == "transcribe")


def test_training_uses_all_wordings_by_default_and_train_split_on_request(data, tmp_path, inputs):
    train_ex = [ex for ex in read_jsonl(data / "train.jsonl") if ex["kind"] == "chat"]
    assert {"train", "heldout"} <= {ex["split"] for ex in train_ex}
    d = prepare(tmp_path / "train_split", *inputs, "--include_heldout", "false")
    train_only = [ex for ex in read_jsonl(d / "train.jsonl") if ex["kind"] == "chat"]
    assert train_only and {ex["split"] for ex in train_only} == {"train"}
    assert not {"last_word", "keyword"} & {ex["task"] for ex in train_only}


def test_prepare_is_reproducible(data, tmp_path, inputs):
    again = prepare(tmp_path / "again", *inputs, *SCRAMBLED)
    for name in ("train.jsonl", "valid.jsonl", "eval.jsonl", "eval_seen.jsonl"):
        assert (again / name).read_bytes() == (data / name).read_bytes(), name


def test_instruction_answers_come_from_the_tasks(data):
    for ex in read_jsonl(data / "train.jsonl"):
        if ex["kind"] != "chat" or ex.get("scrambled"):
            continue
        verse = VERSES[ex["ref"]]
        answer = ex["messages"][1]["content"]
        assert verse.transcript in ex["messages"][0]["content"]
        if ex["task"] == "count_words":
            assert answer == str(len(verse.words))
        elif ex["task"] in ("repeat", "transcribe"):
            assert answer == verse.transcript
        elif ex["task"] == "source_book":
            assert answer == {"Psa": "Psalms", "Prv": "Proverbs", "Mat": "Matthew", "John": "John"}[verse.book]


def test_scrambled_examples_shuffle_training_sentences(data):
    train_ex = read_jsonl(data / "train.jsonl")
    scrambled = [ex for ex in train_ex if ex.get("scrambled")]
    train_refs = {ex["ref"] for ex in train_ex if ex["kind"] == "chat" and not ex.get("scrambled")}
    assert len(scrambled) == round(0.5 * len(train_refs))
    for ex in scrambled:
        assert ex["ref"] in train_refs and ex["task"] not in ("continue", "source_book")
        assert sorted(ex["sentence"].split()) == sorted(VERSES[ex["ref"]].words)
        assert ex["sentence"] in ex["messages"][0]["content"]
        if ex["answer_task"] == "repeat":
            assert ex["messages"][1]["content"] == ex["sentence"]


# --- tokenizer, chat template, loss masking ----------------------------------------------
def test_tokenizer_special_tokens(tokenizer):
    assert len(tokenizer) == 400
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == \
        ("<s>", "<|end|>", "<pad>", "<unk>")
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tokenizer.unk_token_id not in ids[1:]


def test_tokenizer_round_trip(tokenizer):
    text = VERSES["Psa23:1"].transcript
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    assert tokenizer.decode(tokenizer("zebra quux").input_ids, skip_special_tokens=True).strip() == "zebra quux"


def test_chat_template(tokenizer):
    msgs = [{"role": "user", "content": "Repeat: amen"}, {"role": "assistant", "content": "amen"}]
    assert tokenizer.apply_chat_template(msgs, tokenize=False) == \
        "<s><|user|>Repeat: amen<|end|><|assistant|>amen<|end|>"
    with_system = [{"role": "system", "content": "Be brief."}] + msgs[:1]
    assert tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == \
        "<s><|system|>Be brief.<|end|><|user|>Repeat: amen<|end|><|assistant|>"


def test_only_assistant_tokens_are_targets(tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Repeat: the lord is good"},
            {"role": "assistant", "content": "the lord is good"}]
    ids, labels = encode_chat(tokenizer, msgs)
    targets = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(targets).strip() == "the lord is good<|end|>"
    assert labels[-1] == tokenizer.eos_token_id
    # the same positions as the template's {% generation %} block
    mask = tokenizer.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)["assistant_masks"]
    assert [int(t != IGNORE_INDEX) for t in labels] == list(mask)
    assert all(labels[i] in (IGNORE_INDEX, ids[i]) for i in range(len(ids)))


def test_plain_text_tokens_are_all_targets(tokenizer):
    ids, labels = encode_text(tokenizer, "in the beginning was the word")
    assert labels[0] == IGNORE_INDEX and labels[1:] == ids[1:]


def test_dataset_collate_and_loss(data, tokenizer):
    ds = LMDataset(data / "valid.jsonl", tokenizer, max_len=512)
    assert len(ds.lengths) == len(ds) and all(n > 0 for n in ds.lengths)
    batch = collate_lm([ds[i] for i in range(len(ds))])
    b, t = batch["input_ids"].shape
    assert t == max(ds.lengths) and batch["attention_mask"].sum() == sum(ds.lengths)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    from speechllm.tasks.lm import build_model

    torch.manual_seed(0)
    model = build_model({"model_conf": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "num_key_value_heads": 1, "intermediate_size": 64}}, tokenizer)
    loss, stats = model(batch)
    assert torch.isfinite(loss) and set(stats) == {"loss", "acc", "ppl"}
    assert abs(stats["loss"] - float(torch.log(torch.tensor(400.0)))) < 1.0  # untrained: about log(V)


def test_read_jsonl_names_the_bad_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"kind": "text", "text": "amen"}\n{"kind": "chat"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2"):
        read_jsonl(p)


# --- train, export, evaluate --------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp_lm")
    rc = train.main(["--task", "lm", "--config", str(CONF), "--train_jsonl", str(data / "train.jsonl"),
                     "--valid_jsonl", str(data / "valid.jsonl"), "--tokenizer_dir", str(data / "tokenizer"),
                     "--exp_dir", str(exp), "--max_epoch", "2", "--batch_bins", "1024", "--scheduler", "constant",
                     "--scheduler_conf", "{}", "--optim_conf.lr", "0.003", *TINY_MODEL])
    assert rc == 0
    return exp


def test_train_writes_checkpoints_and_learns(trained):
    assert (trained / "valid.loss.ave.pt").exists() and (trained / "checkpoints" / "last.pt").is_file()
    history = torch.load(trained / "checkpoints" / "last.pt", weights_only=False)["history"]
    assert history["train"][2]["loss"] < history["train"][1]["loss"]
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["task"] == "lm" and config["tokenizer_dir"].endswith("tokenizer")
    assert config["best_model_criterion"] == [["valid", "loss", "min"]]


def test_train_lm_needs_its_inputs(tmp_path, capsys):
    assert train.main(["--task", "lm", "--config", str(CONF), "--exp_dir", str(tmp_path / "x")]) == 1
    assert "--task lm needs one of --tokenizer_dir / --token_list" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    assert lm_export.main(["--exp_dir", str(trained), "--out_dir", str(out)]) == 0
    return out


def test_export_loads_with_auto_classes(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(exported))
    tok = AutoTokenizer.from_pretrained(str(exported))
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok) == 400
    assert model.config.tie_word_embeddings and model.generation_config.eos_token_id == tok.eos_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "Repeat this sentence: amen"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_eval_writes_per_task_accuracy(exported, data, tmp_path):
    out = tmp_path / "eval"
    assert lm_eval_tasks.main(["--model_dir", str(exported), "--eval_jsonl", str(data / "eval.jsonl"),
                               "--out_dir", str(out), "--batch_size", "8", "--max_new_tokens", "8"]) == 0
    results = json.loads((out / "results.json").read_text())
    n_eval = len(read_jsonl(data / "eval.jsonl"))
    assert results["n"] == n_eval and 0.0 <= results["macro_acc"] <= 1.0
    assert {"repeat", "transcribe", "keyword"} <= set(results["tasks"])
    assert set(results["tasks"]["repeat"]["by_split"]) <= {"train", "heldout"}
    assert results["tasks"]["repeat"]["wer"] >= 0 and results["tasks"]["first_word"]["wer"] is None
    assert len((out / "hyps.jsonl").read_text().splitlines()) == n_eval
    assert "| repeat |" in (out / "results.md").read_text()
