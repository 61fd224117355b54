"""Prompting: chat templates split at audio placeholders, assistant targets, stop tokens, and the
tiny tokenizers/LLMs loaded through speechllm.llm.loading."""
from __future__ import annotations

import pytest
import torch

from speechllm.llm.loading import build_causal_lm_from_config, load_causal_lm, load_tokenizer
from speechllm.llm.prompting import (
    AUDIO_PLACEHOLDER,
    DEFAULT_CHAT_TEMPLATE,
    PromptPieces,
    render_prompt_pieces,
    response_ids,
    stop_token_ids,
)
from speechllm.utils.config import ConfigError
from sllm_toys import make_chatml_tokenizer, make_tiny_llm, make_tiny_tokenizer


@pytest.fixture(scope="module")
def toy_tok(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("toy_tok"))


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chatml_tok")
    make_chatml_tokenizer(path)
    return path


def _decode(tok, ids: torch.Tensor) -> str:
    return tok.decode(ids.tolist(), skip_special_tokens=False)


def test_pieces_split_at_the_placeholder(toy_tok):
    pieces = render_prompt_pieces(toy_tok, f"Transcribe: {AUDIO_PLACEHOLDER}", n_audio=1)
    assert pieces.n_audio == 1 and len(pieces.text_ids) == 2
    assert _decode(toy_tok, pieces.text_ids[0]) == "<|user|>Transcribe: "
    assert _decode(toy_tok, pieces.text_ids[1]) == "<|end|><|assistant|>"
    assert pieces.text_ids[0][0].item() == toy_tok.convert_tokens_to_ids("<|user|>")
    assert all(t.dtype == torch.long for t in pieces.text_ids)


def test_interleaved_placeholders_and_empty_pieces(toy_tok):
    pieces = render_prompt_pieces(toy_tok, f"the {AUDIO_PLACEHOLDER} of the {AUDIO_PLACEHOLDER}{AUDIO_PLACEHOLDER} lord")
    assert pieces.n_audio == 3
    texts = [_decode(toy_tok, t) for t in pieces.text_ids]
    assert texts == ["<|user|>the ", " of the ", "", " lord<|end|><|assistant|>"]
    assert pieces.text_ids[2].numel() == 0
    none = render_prompt_pieces(toy_tok, "no audio here")
    assert none.n_audio == 0 and len(none.text_ids) == 1


def test_placeholder_count_must_match_the_audio(toy_tok):
    with pytest.raises(ValueError, match="1 <\\|audio\\|> placeholder.*2 audio segment"):
        render_prompt_pieces(toy_tok, f"Transcribe: {AUDIO_PLACEHOLDER}", n_audio=2)
    with pytest.raises(ValueError, match="system prompt"):
        render_prompt_pieces(toy_tok, "x", system=f"you hear {AUDIO_PLACEHOLDER}")
    with pytest.raises(ValueError, match="n_audio"):
        PromptPieces([torch.tensor([1])], n_audio=1)


def test_system_prompt_comes_first(toy_tok):
    pieces = render_prompt_pieces(toy_tok, AUDIO_PLACEHOLDER, system="be brief")
    assert _decode(toy_tok, pieces.text_ids[0]) == "<s>be brief\n<|user|>"


def test_response_ids_include_the_end_of_turn(toy_tok):
    ids = response_ids(toy_tok, f"Transcribe: {AUDIO_PLACEHOLDER}", "and god said")
    assert _decode(toy_tok, ids) == "and god said<|end|>"
    assert ids[-1].item() == toy_tok.eos_token_id
    assert stop_token_ids(toy_tok) == [toy_tok.eos_token_id]


def test_chatml_template_like_qwen2(chatml_dir):
    tok = load_tokenizer(str(chatml_dir))
    assert tok.pad_token == "<|endoftext|>"  # missing pad -> eos
    pieces = render_prompt_pieces(tok, f"Transcribe: {AUDIO_PLACEHOLDER}")
    assert _decode(tok, pieces.text_ids[0]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nTranscribe: ")
    assert _decode(tok, pieces.text_ids[1]) == "<|im_end|>\n<|im_start|>assistant\n"
    ids = response_ids(tok, f"Transcribe: {AUDIO_PLACEHOLDER}", "let there be light")
    assert _decode(tok, ids) == "let there be light<|im_end|>\n"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tok) == [tok.eos_token_id, im_end]


def test_tokenizer_without_template_gets_the_default(chatml_dir, tmp_path):
    tok = load_tokenizer(str(chatml_dir))
    tok.chat_template = None
    # render functions fall back on the default without changing the tokenizer ...
    ids = response_ids(tok, AUDIO_PLACEHOLDER, "light")
    assert _decode(tok, ids) == "light<|endoftext|>"
    assert stop_token_ids(tok) == [tok.eos_token_id]
    assert tok.chat_template is None
    # ... and load_tokenizer installs it, so that it is saved with an exported model
    tok.save_pretrained(str(tmp_path))
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    assert load_tokenizer(str(tmp_path)).chat_template == DEFAULT_CHAT_TEMPLATE


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_llm_dir_loads_with_tokenizer(tmp_path, family):
    path = make_tiny_llm(tmp_path, family)
    model = load_causal_lm(path)
    tok = load_tokenizer(path)
    assert model.config.model_type == family and model.dtype == torch.float32
    assert model.get_input_embeddings().num_embeddings == len(tok)
    out = model(input_ids=torch.tensor([tok.encode("and god said")]))
    assert out.logits.shape[-1] == len(tok)
    assert load_causal_lm(path, torch_dtype="bfloat16").dtype == torch.bfloat16


def test_hub_id_offline_fails_fast_with_a_local_dir_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        load_causal_lm("nobody-here/no-such-llm-xyz")
    msg = str(e.value)
    assert "'nobody-here/no-such-llm-xyz'" in msg and "HF_HUB_OFFLINE" in msg and "llm: /path/to/dir" in msg
    with pytest.raises(ConfigError, match="no-such-llm-xyz"):
        load_tokenizer("nobody-here/no-such-llm-xyz")
    with pytest.raises(ConfigError, match="directory /no/such/dir/x not found"):
        load_causal_lm("/no/such/dir/x")


def test_hub_id_without_network_fails_fast(monkeypatch):
    import speechllm.nets.encoders.pretrained as pretrained  # the shared hub loader probes here

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pretrained, "hub_reachable", lambda: False)
    with pytest.raises(ConfigError, match="'nobody-here/no-such-llm-xyz'.*unreachable.*llm: /path/to/dir"):
        load_causal_lm("nobody-here/no-such-llm-xyz")


def test_build_from_config_errors():
    with pytest.raises(ConfigError, match="model_type"):
        build_causal_lm_from_config({"hidden_size": 8})
    with pytest.raises(ConfigError, match="llm_config"):
        build_causal_lm_from_config({"model_type": "no-such-family"})
    with pytest.raises(ConfigError, match="torch_dtype"):
        build_causal_lm_from_config({"model_type": "llama"}, torch_dtype="float8")
