"""The ``lm`` task on the ASR token list: <sos/eos> tokens <sos/eos> with the final <sos/eos> a
target, Kaldi-style text input, training through ``speechllm.bin.train``, and loading the LM for
decoding only with the same token list."""
import json

import pytest
import torch
import yaml

from speechllm.bin import lm_export, train
from speechllm.data.datadir import DataDirError
from speechllm.tasks.lm import (IGNORE_INDEX, LMDataset, UnitTokenizer, build_model, collate_lm, load_unit_lm,
                                load_unit_tokenizer)
from speechllm.text.tokenizer import Tokenizer, train_tokenizer
from speechllm.utils.config import ConfigError

SENTENCES = ["in the beginning god created the heaven and the earth", "the lord is my shepherd",
             "blessed are the meek for they shall inherit the earth", "and god said let there be light",
             "jesus wept", "my help cometh from the lord which made heaven and earth"]
TINY_MODEL = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 32}


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """A char token list (<blank>, <unk>, characters, <sos/eos>) and Kaldi-style train/valid text."""
    d = tmp_path_factory.mktemp("units")
    (d / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    model, tokens = train_tokenizer(d / "corpus.txt", d / "tok", model_type="char", vocab_size=None)
    (d / "train.txt").write_text("".join(f"s{i:02d} {s}\n" for i, s in enumerate(SENTENCES * 3)))
    (d / "valid.txt").write_text("v1 the earth is the lord's\nv2 god is light\n")
    return d, model, tokens


@pytest.fixture(scope="module")
def tokenizer(units):
    _, model, tokens = units
    return load_unit_tokenizer(tokens, model)


def test_a_sentence_is_sos_tokens_eos_and_its_final_eos_is_a_target(units, tokenizer):
    d, *_ = units
    asr = tokenizer.tokenizer
    ds = LMDataset(d / "valid.txt", tokenizer, fmt="text")
    item = ds[1]
    eos = asr.sos_eos_id
    assert eos == asr.vocab_size - 1 == len(tokenizer) - 1
    assert item["utt_id"] == "v2" and item["input_ids"] == [eos, *asr.encode("god is light"), eos]
    assert item["labels"] == [IGNORE_INDEX, *asr.encode("god is light"), eos]  # the end of sentence is scored
    assert item["pad_id"] == asr.blank_id == 0 and ds.lengths == [len(ds[0]["input_ids"]), len(item["input_ids"])]


def test_padding_is_masked_and_the_loss_covers_exactly_the_targets(units, tokenizer):
    d, *_ = units
    ds = LMDataset(d / "valid.txt", tokenizer, fmt="text")
    batch = collate_lm([ds[0], ds[1]])
    short = len(ds[1]["input_ids"])
    assert (batch["input_ids"][1, short:] == 0).all() and (batch["labels"][1, short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"].sum(1).tolist() == ds.lengths
    torch.manual_seed(0)
    model = build_model({"model_conf": TINY_MODEL}, tokenizer)
    with torch.no_grad():
        loss, stats = model(batch)
        logits = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    terms = [-torch.log_softmax(logits[b, t - 1], -1)[batch["labels"][b, t]]
             for b in range(2) for t in range(1, batch["labels"].size(1)) if batch["labels"][b, t] != IGNORE_INDEX]
    assert len(terms) == sum(n - 1 for n in ds.lengths)  # every token after the first <sos/eos>
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), abs=1e-5)
    assert set(stats) == {"loss", "acc", "ppl"}


def test_kaldi_text_errors_name_the_line_and_id_only_lines_are_skipped(units, tokenizer, tmp_path, caplog):
    bad = tmp_path / "bad.txt"
    bad.write_text("a1 amen\n\na3 amen\n")
    with pytest.raises(DataDirError, match="bad.txt:2: empty line"):
        LMDataset(bad, tokenizer, fmt="text")
    ok = tmp_path / "ids_only.txt"
    ok.write_text("a1 amen\na2\na3 light\n")
    assert [it["utt_id"] for it in LMDataset(ok, tokenizer, fmt="text")] == ["a1", "a3"]
    assert "skipped 1 of 3 lines with an id but no text" in caplog.text


def test_jsonl_text_examples_work_and_chat_examples_need_a_chat_tokenizer(tokenizer, tmp_path):
    p = tmp_path / "lm.jsonl"
    p.write_text(json.dumps({"kind": "text", "text": "jesus wept"}) + "\n")
    assert LMDataset(p, tokenizer)[0]["labels"][-1] == tokenizer.eos_token_id
    chat = {"kind": "chat", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "amen"}]}
    p.write_text(json.dumps({"kind": "text", "text": "jesus wept"}) + "\n" + json.dumps(chat) + "\n")
    with pytest.raises(ConfigError, match="lm.jsonl:2: a 'chat' example.*--tokenizer_dir"):
        LMDataset(p, tokenizer)


@pytest.fixture(scope="module")
def trained(units, tmp_path_factory):
    d, model, tokens = units
    exp = tmp_path_factory.mktemp("exp_unit_lm")
    rc = train.main(["--task", "lm", "--train_text", str(d / "train.txt"), "--valid_text", str(d / "valid.txt"),
                     "--token_list", str(tokens), "--bpemodel", str(model), "--exp_dir", str(exp),
                     "--max_epoch", "2", "--batch_bins", "300", "--num_workers", "0", "--keep_nbest_models", "1",
                     "--optim_conf", "{lr: 0.01}", "--model_conf", json.dumps(TINY_MODEL)])
    assert rc == 0
    return exp


def test_training_on_asr_units_records_its_token_list_and_learns(trained, units):
    _, model, tokens = units
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["task"] == "lm" and config["token_list"] == str(tokens) and config["bpemodel"] == str(model)
    assert config["train_text"].endswith("train.txt") and "tokenizer_dir" not in config
    history = torch.load(trained / "checkpoints" / "last.pt", weights_only=False)["history"]
    assert history["train"][2]["loss"] < history["train"][1]["loss"]
    assert (trained / "valid.loss.ave.pt").exists()


def test_train_lm_needs_one_tokenizer_and_one_data_file(units, tmp_path, capsys):
    d, model, tokens = units
    base = ["--task", "lm", "--exp_dir", str(tmp_path / "x"), "--valid_text", str(d / "valid.txt")]
    assert train.main(base + ["--train_text", str(d / "train.txt")]) == 1
    assert "needs one of --tokenizer_dir / --token_list" in capsys.readouterr().err
    assert train.main(base + ["--token_list", str(tokens), "--bpemodel", str(model)]) == 1
    assert "needs one of --train_jsonl / --train_text" in capsys.readouterr().err
    assert train.main(base + ["--token_list", str(tokens), "--train_text", str(d / "train.txt")]) == 1
    assert "--token_list needs --bpemodel" in capsys.readouterr().err


def test_an_lm_over_asr_units_is_not_exported_as_a_hf_model(trained, tmp_path, capsys):
    assert lm_export.main(["--exp_dir", str(trained), "--out_dir", str(tmp_path / "hf")]) == 1
    assert "is an LM over the ASR token list" in capsys.readouterr().err


def test_load_unit_lm_gives_the_trained_model_for_the_same_token_list(trained, units):
    _, model, tokens = units
    lm = load_unit_lm(trained, trained / "valid.loss.ave.pt", Tokenizer(model, tokens))
    assert not lm.training and lm.lm.config.vocab_size == len(tokens.read_text().splitlines())


def test_load_unit_lm_refuses_another_token_list(trained, units, tmp_path):
    d, *_ = units
    (tmp_path / "corpus.txt").write_text("zebra quux\nxylophone\n")
    other_model, other_tokens = train_tokenizer(tmp_path / "corpus.txt", tmp_path / "other", model_type="char",
                                                vocab_size=None)
    with pytest.raises(ConfigError, match="has .* tokens, the ASR's .* must be trained on the ASR model's token list"):
        load_unit_lm(trained, trained / "valid.loss.ave.pt", Tokenizer(other_model, other_tokens))
    # The token list file moved away: the vocabulary size of the weights is still checked.
    config = yaml.safe_load((trained / "config.yaml").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "config.yaml").write_text(yaml.safe_dump({**config, "token_list": str(tmp_path / "gone.txt")}))
    with pytest.raises(ConfigError, match="vocabulary of .* tokens"):
        load_unit_lm(moved, trained / "valid.loss.ave.pt", Tokenizer(other_model, other_tokens))
    # An LM with its own tokenizer (the sllm1 mini LLM) is not an LM over the ASR's tokens.
    (moved / "config.yaml").write_text(yaml.safe_dump({"task": "lm", "tokenizer_dir": "data/lm/tokenizer"}))
    with pytest.raises(ConfigError, match="not trained on an ASR token list"):
        load_unit_lm(moved, trained / "valid.loss.ave.pt", Tokenizer(other_model, other_tokens))


def test_unit_tokenizer_ids(tokenizer):
    assert isinstance(tokenizer, UnitTokenizer) and tokenizer.chat_template is None
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == len(tokenizer) - 1
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
