"""Sentencepiece tokenizers: token list layout, round trips, id mapping checks."""
from __future__ import annotations

from pathlib import Path

import pytest

from speechllm.text.tokenizer import Tokenizer, read_token_list, train_tokenizer, write_token_list

SENTENCES = [
    "hello world", "the quick brown fox jumps over the lazy dog", "speech recognition is fun",
    "a tiny corpus for a tiny test", "hello again brown dog", "fun with foxes and dogs",
] * 5


@pytest.fixture
def plain_text(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def kaldi_text(tmp_path: Path) -> Path:
    path = tmp_path / "text"
    path.write_text("".join(f"utt{i:03d} {s}\n" for i, s in enumerate(SENTENCES)), encoding="utf-8")
    return path


@pytest.mark.parametrize("model_type,vocab_size", [("bpe", 40), ("unigram", 30), ("char", None)])
def test_round_trip_and_token_list_layout(plain_text: Path, tmp_path: Path, model_type: str, vocab_size):
    model, tokens_txt = train_tokenizer(plain_text, tmp_path / model_type, model_type, vocab_size)
    assert model.name == "tokenizer.model" and tokens_txt.name == "tokens.txt"
    tokens = read_token_list(tokens_txt)
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == "<sos/eos>"
    if vocab_size is not None:
        assert len(tokens) == vocab_size + 2
    tok = Tokenizer(model, tokens_txt)
    assert tok.vocab_size == len(tokens)
    for sentence in SENTENCES[:6]:
        ids = tok.encode(sentence)
        assert all(2 <= i < tok.vocab_size - 1 for i in ids)  # no specials in ordinary text
        assert tok.decode(ids) == sentence
        assert [tokens[i] for i in ids] == tok.pieces(sentence)


def test_char_tokens_are_single_characters(plain_text: Path, tmp_path: Path):
    _, tokens_txt = train_tokenizer(plain_text, tmp_path, "char", None)
    pieces = read_token_list(tokens_txt)[2:-1]
    assert set(pieces) == set("".join(SENTENCES).replace(" ", "")) | {"▁"}


def test_kaldi_text_drops_the_utterance_id_column(kaldi_text: Path, tmp_path: Path):
    _, tokens_txt = train_tokenizer(kaldi_text, tmp_path, "char", None, kaldi_text=True)
    assert not any(t in read_token_list(tokens_txt) for t in "0123456789")  # ids "utt000".. never seen


def test_unknown_characters_map_to_unk_and_specials_are_skipped_in_decode(plain_text: Path, tmp_path: Path):
    tok = Tokenizer(*train_tokenizer(plain_text, tmp_path, "bpe", 40))
    assert 1 in tok.encode("hello Zürich")
    ids = tok.encode("hello")
    assert tok.decode([0] + ids + [tok.sos_eos_id]) == "hello"
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_user_defined_symbols_stay_whole(plain_text: Path, tmp_path: Path):
    tok = Tokenizer(*train_tokenizer(plain_text, tmp_path, "bpe", 45, user_defined_symbols=["<noise>"]))
    assert "<noise>" in tok.pieces("hello <noise> world")


def test_token_list_of_another_model_is_rejected(plain_text: Path, tmp_path: Path):
    model, tokens_txt = train_tokenizer(plain_text, tmp_path, "bpe", 40)
    tokens = read_token_list(tokens_txt)
    tokens[5], tokens[6] = tokens[6], tokens[5]
    write_token_list(tmp_path / "swapped.txt", tokens)
    with pytest.raises(ValueError, match=r"swapped.txt:6: token .* does not match"):
        Tokenizer(model, tmp_path / "swapped.txt")
    write_token_list(tmp_path / "short.txt", tokens[:-1])
    with pytest.raises(ValueError, match=r"41 tokens, but .* needs 42"):
        Tokenizer(model, tmp_path / "short.txt")


def test_vocab_too_large_for_text_is_a_clear_error(plain_text: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="Vocabulary size too high"):
        train_tokenizer(plain_text, tmp_path, "unigram", 5000)


def test_tokenizer_is_picklable_for_dataloader_workers(plain_text: Path, tmp_path: Path):
    import pickle

    tok = Tokenizer(*train_tokenizer(plain_text, tmp_path, "bpe", 40))
    assert pickle.loads(pickle.dumps(tok)).encode("hello world") == tok.encode("hello world")


def test_train_and_apply_cli(kaldi_text: Path, tmp_path: Path, capsys):
    from speechllm.bin.tokenizer_apply import main as apply_main
    from speechllm.bin.tokenizer_train import main as train_main

    assert train_main(["--input", str(kaldi_text), "--kaldi_text", "--nbpe", "40", "--out_dir", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    args = ["--model", str(tmp_path / "t/tokenizer.model"), "--token_list", str(tmp_path / "t/tokens.txt"), "--kaldi_text"]
    assert apply_main(args + ["--output", "ids", str(kaldi_text)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[0] == "utt000"
    tok = Tokenizer(tmp_path / "t/tokenizer.model", tmp_path / "t/tokens.txt")
    assert tok.decode([int(i) for i in first[1:]]) == SENTENCES[0]
    assert train_main(["--input", str(kaldi_text), "--nbpe", "5000", "--model_type", "unigram", "--out_dir", str(tmp_path / "u")]) == 1
