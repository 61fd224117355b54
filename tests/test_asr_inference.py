"""asr_inference CLI: job shares, text/nbest output formats, modes, config handling."""
from pathlib import Path

import pytest
import torch
import yaml

from asr_toys import tiny_config, write_feats_dir, write_model_dir
from speechllm.bin.asr_inference import main
from speechllm.text.tokenizer import train_tokenizer

UTTS = {"u1": 60, "u2": 35, "u3": 80, "u4": 20, "u5": 47, "u6": 5}  # u6: too short for 4x subsampling


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A packed-style model dir (config.yaml, model.pt, tokens.txt, tokenizer.model) and a feats dir."""
    root = tmp_path_factory.mktemp("asr_inference")
    write_model_dir(root / "model", ["hello world", "speech recognition", "fox and dog"], tiny_config())
    return root / "model", write_feats_dir(root / "data", UTTS)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_jobs_split_the_utterances_and_write_text_and_nbest(setup, tmp_path, capfd):
    model_dir, data = setup
    for job in (1, 2):
        rc = main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(tmp_path),
                   "--job", str(job), "--nj", "2", "--beam_size", "3", "--nbest", "2", "--batch_size", "2"])
        assert rc == 0
    ids = [line.split(" ", 1)[0] for j in (1, 2) for line in read_lines(tmp_path / f"text.{j}")]
    assert ids == sorted(UTTS)  # contiguous shares in id order, each file sorted
    nbest = [line.split(" ", 3) for j in (1, 2) for line in read_lines(tmp_path / f"nbest.{j}")]
    for utt in UTTS:
        rows = [r for r in nbest if r[0] == utt]
        assert [int(r[1]) for r in rows] == list(range(1, len(rows) + 1))
        assert 1 <= len(rows) <= 2
        scores = [float(r[2]) for r in rows]
        assert scores == sorted(scores, reverse=True)
    err = capfd.readouterr().err
    assert "decoded 3 utterances" in err and "RTF" in err
    assert "1 of 3 utterances too short" in err
    assert "u6 \n" not in (tmp_path / "text.2").read_text() and "u6" in (tmp_path / "text.2").read_text()
    assert (tmp_path / "decode_config.yaml").is_file()


def test_gen_info_marks_hypotheses_cut_at_the_token_bound(setup, tmp_path, capfd):
    model_dir, data = setup
    # ratio 0.001: a bound of 1 token, so the search must end every hypothesis at the first step
    assert main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(tmp_path / "cut"),
                 "--beam_size", "2", "--maxlen_ratio", "0.001"]) == 0
    info = {u: (n, stopped) for u, n, stopped in (line.split() for line in read_lines(tmp_path / "cut" / "gen_info.1"))}
    assert sorted(info) == sorted(UTTS)
    assert all(info[u] == ("0", "0") for u in UTTS if u != "u6") and info["u6"] == ("0", "1")  # u6: not decoded
    assert "5 of 6 hypotheses reached the token bound (maxlen_ratio 0.001)" in capfd.readouterr().err
    # the pure CTC prefix search has no token limit: nothing is cut, whatever maxlen_ratio says
    assert main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(tmp_path / "ctc"),
                 "--beam_size", "2", "--maxlen_ratio", "0.001", "--ctc_weight", "1.0"]) == 0
    assert all(line.split()[2] == "1" for line in read_lines(tmp_path / "ctc" / "gen_info.1"))
    # the same model with the default bound (the encoder length) and greedy CTC (no bound): lengths as in text
    for mode in ("beam", "greedy_ctc"):
        out = tmp_path / mode
        assert main(["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(out),
                     "--beam_size", "2", "--mode", mode]) == 0
        rows = [line.split() for line in read_lines(out / "gen_info.1")]
        assert [r[0] for r in rows] == sorted(UTTS) and all(r[2] in ("0", "1") for r in rows)
        if mode == "greedy_ctc":
            assert all(r[2] == "1" for r in rows)


def test_greedy_ctc_mode_with_training_config_and_checkpoint(setup, tmp_path):
    model_dir, data = setup
    rc = main(["--config", str(model_dir / "config.yaml"), "--checkpoint", str(model_dir / "model.pt"),
               "--token_list", str(model_dir / "tokens.txt"), "--bpemodel", str(model_dir / "tokenizer.model"),
               "--data_dir", str(data), "--output_dir", str(tmp_path), "--mode", "greedy_ctc"])
    assert rc == 0
    assert len(read_lines(tmp_path / "text.1")) == len(UTTS)
    assert all(line.split(" ", 3)[1] == "1" for line in read_lines(tmp_path / "nbest.1"))


def test_decoding_config_file_and_flags_and_print_config(setup, tmp_path, capsys):
    model_dir, _ = setup
    conf = tmp_path / "decode.yaml"
    conf.write_text("beam_size: 7\nctc_weight: 0.5\n")
    assert main(["--model_dir", str(model_dir), "--config", str(conf), "--ctc_weight", "0.2", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["beam_size"] == 7 and printed["ctc_weight"] == 0.2 and printed["mode"] == "beam"


def test_unknown_decoding_option_is_an_error(setup, tmp_path, capsys):
    model_dir, data = setup
    conf = tmp_path / "decode.yaml"
    conf.write_text("beam: 7\n")
    rc = main(["--model_dir", str(model_dir), "--config", str(conf), "--data_dir", str(data),
               "--output_dir", str(tmp_path)])
    assert rc == 1
    assert "unknown decoding option(s) ['beam']" in capsys.readouterr().err


def test_missing_feats_scp_exits_with_message(setup, tmp_path, capsys):
    model_dir, _ = setup
    rc = main(["--model_dir", str(model_dir), "--data_dir", str(tmp_path / "nodata"), "--output_dir", str(tmp_path)])
    assert rc == 1
    assert "feats.scp" in capsys.readouterr().err


# --- shallow fusion with an LM over the same token list ----------------------------------------
def make_lm_dir(root: Path, token_dir: Path) -> Path:
    """An untrained LM 'exp dir' (config.yaml + valid.loss.ave.pt) over the token list in ``token_dir``."""
    from speechllm.tasks.lm import build_model as build_lm
    from speechllm.tasks.lm import load_unit_tokenizer

    config = {"task": "lm", "token_list": str(token_dir / "tokens.txt"), "bpemodel": str(token_dir / "tokenizer.model"),
              "model_conf": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "num_key_value_heads": 1, "intermediate_size": 32}}
    torch.manual_seed(1)
    lm = build_lm(config, load_unit_tokenizer(config["token_list"], config["bpemodel"]))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"model": lm.state_dict()}, root / "valid.loss.ave.pt")
    return root


@pytest.fixture(scope="module")
def lm_dir(setup, tmp_path_factory):
    model_dir, _ = setup
    return make_lm_dir(tmp_path_factory.mktemp("lm") / "exp_lm", model_dir)


def decode_args(setup, out: Path, *extra: str) -> list[str]:
    model_dir, data = setup
    return ["--model_dir", str(model_dir), "--data_dir", str(data), "--output_dir", str(out), "--beam_size", "3",
            "--nbest", "3", *extra]


def test_lm_fusion_decodes_and_records_the_lm(setup, lm_dir, tmp_path, capfd):
    assert main(decode_args(setup, tmp_path / "plain")) == 0
    assert main(decode_args(setup, tmp_path / "zero", "--lm_dir", str(lm_dir), "--lm_weight", "0")) == 0
    assert "lm_weight is 0: decoding without the LM" in capfd.readouterr().err
    assert (tmp_path / "zero" / "nbest.1").read_text() == (tmp_path / "plain" / "nbest.1").read_text()
    for ctc_weight in ("0.3", "1.0"):
        out = tmp_path / f"lm{ctc_weight}"
        assert main(decode_args(setup, out, "--lm_dir", str(lm_dir), "--lm_weight", "2.0",
                                "--ctc_weight", ctc_weight)) == 0
        assert len(read_lines(out / "text.1")) == len(UTTS)
        assert (out / "nbest.1").read_text() != (tmp_path / "plain" / "nbest.1").read_text()
        info = yaml.safe_load((out / "decode_config.yaml").read_text())
        assert info["lm_weight"] == 2.0 and info["lm_dir"] == str(lm_dir)


def test_lm_options_that_cannot_work_are_errors(setup, lm_dir, tmp_path, capsys):
    assert main(decode_args(setup, tmp_path, "--lm_weight", "0.5")) == 1
    assert "lm_weight 0.5 needs an LM: give --lm_dir" in capsys.readouterr().err
    greedy = decode_args(setup, tmp_path, "--lm_dir", str(lm_dir), "--lm_weight", "0.5", "--mode", "greedy_ctc")
    assert main(greedy) == 1
    assert "shallow fusion needs mode beam" in capsys.readouterr().err
    assert main(decode_args(setup, tmp_path, "--lm_dir", str(lm_dir), "--lm_weight", "-1")) == 1
    assert "lm_weight: expected a number >= 0" in capsys.readouterr().err


def test_lm_of_another_token_list_is_an_error(setup, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("zebra quux\n")
    train_tokenizer(tmp_path / "corpus.txt", tmp_path / "other", model_type="char", vocab_size=None)
    other = make_lm_dir(tmp_path / "exp_lm_other", tmp_path / "other")
    assert main(decode_args(setup, tmp_path / "out", "--lm_dir", str(other), "--lm_weight", "0.5")) == 1
    err = capsys.readouterr().err
    assert "asr_inference: the LM's token list" in err and "must be trained on the ASR model's token list" in err


def test_lexicon_restricts_hypotheses_to_its_words(setup, tmp_path, capfd):
    words = ["hello", "world", "dog", "and"]
    (tmp_path / "lexicon.txt").write_text("".join(f"{w} {' '.join(w)}\n" for w in words))  # Kaldi lexicon.txt
    for ctc_weight in ("0.3", "1.0"):
        out = tmp_path / f"lex{ctc_weight}"
        assert main(decode_args(setup, out, "--lexicon", str(tmp_path / "lexicon.txt"), "--ctc_weight", ctc_weight)) == 0
        hyps = [line.split(" ", 3)[3].split() if line.count(" ") >= 3 else [] for line in read_lines(out / "nbest.1")]
        assert any(hyps) and all(w in words for h in hyps for w in h)
        assert yaml.safe_load((out / "decode_config.yaml").read_text())["lexicon"] == str(tmp_path / "lexicon.txt")
    assert "restricted to its 4 words" in capfd.readouterr().err
    assert main(decode_args(setup, tmp_path / "x", "--lexicon", str(tmp_path / "none.txt"))) == 1
    assert f"{tmp_path / 'none.txt'}: file not found" in capfd.readouterr().err
    (tmp_path / "bad.txt").write_bytes(b"hello\n\xff\xfe\n")
    assert main(decode_args(setup, tmp_path / "x", "--lexicon", str(tmp_path / "bad.txt"))) == 1
    assert f"{tmp_path / 'bad.txt'}:2: invalid UTF-8 byte 0xff" in capfd.readouterr().err
    greedy = decode_args(setup, tmp_path / "x", "--lexicon", str(tmp_path / "lexicon.txt"), "--mode", "greedy_ctc")
    assert main(greedy) == 1
    assert "a word list needs mode beam" in capfd.readouterr().err
