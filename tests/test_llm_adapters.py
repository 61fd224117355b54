"""Freezing patterns, LoRA, the YAML build path and the merged export of the speech LLM."""
from __future__ import annotations

import pytest
import torch

from speechllm.llm.adapters import apply_freezing, apply_lora, canonical_name, merge_and_export, scale_lora
from speechllm.llm.loading import load_causal_lm
from speechllm.llm.prompting import AUDIO_PLACEHOLDER as AUDIO
from speechllm.models.speech_llm import SpeechLLM
from speechllm.nets.encoders import ENCODERS
from speechllm.utils.config import ConfigError, load_yaml
from sllm_toys import TinyFbankEncoder, make_batch, make_tiny_llm, tiny_llm_config, tiny_speech_llm

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(autouse=True)
def tiny_fbank_encoder(monkeypatch):
    monkeypatch.setitem(ENCODERS, "tiny_fbank", TinyFbankEncoder)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("llama"), "llama")


def _batch(tok, with_targets: bool = True) -> dict:
    return make_batch(tok, [18, 11], [
        (f"Transcribe: {AUDIO}", [(0, 0, -1)], "and god said" if with_targets else None),
        (f"the {AUDIO} of the {AUDIO}", [(1, 0, 2), (1, 2, -1)], "let there be light" if with_targets else None),
    ])


def _randomize_lora(model) -> None:
    with torch.no_grad():  # lora_B starts at zero: make the adapters change the outputs
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)


def test_freeze_then_unfreeze_wins(llama_dir):
    model = tiny_speech_llm(llama_dir)
    counts = apply_freezing(model, ["encoder.*", "llm.*"], ["llm.model.layers.1.*"])
    for name, p in model.named_parameters():
        expect = name.startswith("projector.") or name.startswith("llm.model.layers.1.")
        assert p.requires_grad == expect, name
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trainable"] + counts["frozen"] == counts["total"]


def test_pattern_matching_nothing_is_a_config_error(llama_dir):
    model = tiny_speech_llm(llama_dir)
    with pytest.raises(ConfigError, match=r"freeze: pattern 'encodr\.\*' matches no parameter.*encoder\.\*"):
        apply_freezing(model, ["encodr.*"])
    with pytest.raises(ConfigError, match="unfreeze: pattern 'llm.nope'"):
        apply_freezing(model, [], ["llm.nope"])
    with pytest.raises(ConfigError, match="lists of patterns"):
        apply_freezing(model, "llm.*")


def test_lora_freezes_the_base_and_patterns_see_through_the_wrapper(llama_dir):
    model = tiny_speech_llm(llama_dir, lora=LORA)
    lora_names = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    assert any(n.endswith("q_proj.lora_A.default.weight") for n in lora_names)
    assert not any("k_proj.lora" in n for n in lora_names)
    # plain-model names match the PEFT-wrapped parameters
    assert canonical_name("llm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight") == \
        "llm.model.layers.0.self_attn.q_proj.weight"
    apply_freezing(model, [], ["llm.model.embed_tokens.*", "llm.model.layers.0.self_attn.q_proj.weight"])
    assert model.llm.get_input_embeddings().weight.requires_grad
    assert model.llm.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.requires_grad


def test_all_linear_lora_and_bad_targets(llama_dir):
    llm = load_causal_lm(llama_dir)
    peft_llm = apply_lora(llm, r=2, alpha=4, dropout=0.0, target_modules="all-linear")
    targets = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in peft_llm.named_parameters() if ".lora_A" in n}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ConfigError, match="lora.target_modules"):
        apply_lora(load_causal_lm(llama_dir), r=2, alpha=4, dropout=0.0, target_modules=["no_such_proj"])
    with pytest.raises(ConfigError, match="lora.target_modules"):
        apply_lora(load_causal_lm(llama_dir), target_modules="q_proj")


def test_freezing_the_lora_adapters_is_a_config_error(llama_dir):
    with pytest.raises(ConfigError, match="froze the LoRA adapters"):
        tiny_speech_llm(llama_dir, lora=LORA, freeze=["llm.*"])


def test_random_llm_from_config_and_a_qformer(llama_dir):
    from speechllm.llm.loading import build_causal_lm_from_config

    torch.manual_seed(0)
    llm = build_causal_lm_from_config(tiny_llm_config("qwen2", 300))
    model = tiny_speech_llm(llama_dir, llm=llm, projector="qformer",
                            projector_conf={"window": 4, "num_queries": 2, "d_model": 16, "num_heads": 2,
                                            "num_layers": 1})
    assert model.llm.config.model_type == "qwen2"
    loss, _ = model(_batch(model.tokenizer))
    assert torch.isfinite(loss)


def test_merged_export_matches_the_lora_model(llama_dir, tmp_path):
    model = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"], projector="conv1d",
                            projector_conf={"downsample": 2, "kernel_size": 3, "hidden_size": 32})
    _randomize_lora(model)
    batch = _batch(model.tokenizer)
    loss, _ = model(batch)
    greedy = model.generate(_batch(model.tokenizer, with_targets=False), 8)

    out = merge_and_export(model, tmp_path / "export")
    assert (out / "llm" / "config.json").is_file() and (out / "speech.pt").is_file()
    config = load_yaml(out / "config.yaml")
    assert config["llm"] == "llm" and config["projector"] == "conv1d"
    assert not {"lora", "freeze"} & set(config)
    assert not any("lora" in k for k in load_causal_lm(str(out / "llm")).state_dict())
    # the original keeps its adapters
    assert any("lora_A" in n for n, _ in model.named_parameters())

    exported = SpeechLLM.from_exported(out).eval()
    torch.testing.assert_close(exported(batch)[0], loss, atol=1e-5, rtol=1e-5)
    assert exported.generate(_batch(exported.tokenizer, with_targets=False), 8) == greedy
    # logits of the merged LLM equal those of the LoRA model
    seqs, _ = model._sequences(batch, batch["response_ids"])
    embeds, mask = model._pad(seqs, left=False)
    with torch.no_grad():
        ref = model.llm(inputs_embeds=embeds, attention_mask=mask).logits
        got = exported.llm(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_export_needs_the_build_config(llama_dir, tmp_path):
    model = tiny_speech_llm(llama_dir)
    bare = SpeechLLM(model.encoder, model.projector, model.llm, model.tokenizer)
    with pytest.raises(ValueError, match="no build config"):
        merge_and_export(bare, tmp_path / "a")
    merge_and_export(bare, tmp_path / "b", config=model.config)  # the training config.yaml, given
    assert SpeechLLM.from_exported(tmp_path / "b").config["projector"] == "linear"


def test_lora_scale_zero_is_the_llm_without_adapters(llama_dir):
    model = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"]).eval()
    _randomize_lora(model)
    batch = _batch(model.tokenizer)
    with torch.no_grad():
        trained = model(batch)[0]
        with model.llm.disable_adapter():
            base = model(batch)[0]
        assert scale_lora(model, 1.0) == 2 * model.llm.config.num_hidden_layers  # q and v per layer
        torch.testing.assert_close(model(batch)[0], trained)
        scale_lora(model, 0.0)
        torch.testing.assert_close(model(batch)[0], base)
    assert not torch.allclose(base, trained)
    plain = tiny_speech_llm(llama_dir, lora=None, freeze=["encoder.*"])
    assert scale_lora(plain, 1.0) == 0
    with pytest.raises(ConfigError, match="no LoRA layers"):
        scale_lora(plain, 0.5)
