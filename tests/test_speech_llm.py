"""SpeechLLM: loss on response tokens only, padding/batching invariance, audio spans, gradients
and modes of frozen parts, trainable-only checkpoints, batched generation."""
from __future__ import annotations

import pytest
import torch

from speechllm.llm.loading import load_causal_lm
from speechllm.llm.prompting import AUDIO_PLACEHOLDER as AUDIO
from speechllm.llm.prompting import transcript_ids
from speechllm.models.speech_llm import IGNORE_ID, SpeechLLM
from speechllm.nets.encoders import ENCODERS
from speechllm.nets.projectors import LinearProjector
from speechllm.utils.config import ConfigError
from sllm_toys import TinyFbankEncoder, make_batch, make_tiny_llm, select, tiny_speech_llm

LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(autouse=True)
def tiny_fbank_encoder(monkeypatch):
    monkeypatch.setitem(ENCODERS, "tiny_fbank", TinyFbankEncoder)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("qwen2"), "qwen2", chatml=True)


def _train_batch(tok) -> dict:
    # 3 utterances, 4 sequences: one uses two spans of utterance 0 (interleaved), one has no audio
    return make_batch(tok, [20, 14, 9], [
        (f"Transcribe: {AUDIO}", [(1, 0, -1)], "and god said"),
        (f"the {AUDIO} of the {AUDIO} lord", [(0, 0, 4), (0, 4, -1)], "let there be light"),
        ("say the earth", [], "the earth"),
        (f"{AUDIO} translate", [(2, 1, 3)], "in the beginning god created the heaven"),
    ])


def _gen_batch(tok) -> dict:
    return make_batch(tok, [20, 14, 9], [
        (f"Transcribe: {AUDIO}", [(1, 0, -1)], None),
        (f"the {AUDIO} of the {AUDIO} lord", [(0, 0, 4), (0, 4, -1)], None),
        (f"{AUDIO}", [(2, 0, -1)], None),
    ])


def test_loss_is_the_mean_over_response_tokens(llama_dir):
    model = tiny_speech_llm(llama_dir)
    batch = _train_batch(model.tokenizer)
    loss, stats = model(batch)
    assert set(stats) == {"loss", "acc"} and 0.0 <= stats["acc"] <= 1.0
    assert torch.isfinite(loss) and stats["loss"] == pytest.approx(loss.item())
    # the same through transformers' own shifted loss on full-length logits
    seqs, prompt_lens = model._sequences(batch, batch["response_ids"])
    embeds, mask = model._pad(seqs, left=False)
    labels = torch.full(mask.shape, IGNORE_ID)
    for b, (r, p) in enumerate(zip(batch["response_ids"], prompt_lens)):
        labels[b, p:p + len(r)] = r
    ref = model.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    # audio slots hold the projected spans: prompt length = text tokens + projected frames
    enc_len = 14 // 2  # TinyFbankEncoder halves the frames; the projector halves again (ceil)
    assert prompt_lens[0] == batch["prompts"][0].num_text_tokens() + -(-enc_len // 2)


def test_batch_loss_equals_the_token_weighted_single_losses(llama_dir):
    model = tiny_speech_llm(llama_dir)
    batch = _train_batch(model.tokenizer)
    loss, _ = model(batch)
    n_tok = [len(r) for r in batch["response_ids"]]
    singles = [float(model(select(batch, b))[0]) * n for b, n in enumerate(n_tok)]
    assert float(loss) == pytest.approx(sum(singles) / sum(n_tok), abs=1e-5)


def test_bad_batches_raise(llama_dir):
    model = tiny_speech_llm(llama_dir)
    batch = _train_batch(model.tokenizer)
    batch["audio_spans"][0] = [(1, 0, -1), (0, 0, 2)]
    with pytest.raises(ValueError, match="sequence 0: the prompt has 1 audio slot.*2 audio span"):
        model(batch)
    batch = _train_batch(model.tokenizer)
    batch["audio_spans"][0] = [(1, 3, 30)]
    with pytest.raises(ValueError, match=r"audio span \(1, 3, 30\) is outside utterance utt1 \(7 encoder frames\)"):
        model(batch)
    batch = _train_batch(model.tokenizer)
    del batch["response_ids"]
    with pytest.raises(ValueError, match="needs a target"):
        model(batch)


def test_only_trainable_parameters_get_gradients(llama_dir):
    model = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"]).train()
    loss, _ = model(_train_batch(model.tokenizer))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "llm"}
    assert all("lora_" in n for n, p in model.llm.named_parameters() if p.requires_grad)


def test_frozen_submodules_stay_in_eval_mode(llama_dir):
    model = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"])
    model.train()
    assert not model.encoder.training and not model.encoder.dropout.training
    assert model.projector.training and model.llm.training
    q_proj = model.llm.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.lora_dropout["default"].training  # LoRA dropout is on
    assert not model.llm.base_model.model.model.layers[0].mlp.training  # fully frozen
    running = model.encoder.norm.running_mean.clone()
    model(_train_batch(model.tokenizer))[0].backward()
    assert torch.equal(model.encoder.norm.running_mean, running)  # BatchNorm of the frozen encoder untouched
    model.eval()
    assert not any(m.training for m in model.modules())


def test_checkpoint_holds_only_trainable_weights_and_reloads(llama_dir):
    model = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"], unfreeze=["encoder.norm.*"])
    with torch.no_grad():  # make the adapters matter (lora_B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    state = model.checkpoint_state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(state)
    # plus the BatchNorm buffers of the unfrozen norm, nothing frozen
    assert set(state) - trainable == {"encoder.norm.running_mean", "encoder.norm.running_var",
                                      "encoder.norm.num_batches_tracked"}
    assert not any("base_layer" in k or "embed_tokens" in k for k in state)

    # a fresh model: the same frozen parts (same seed, same LLM dir), other trainable values
    fresh = tiny_speech_llm(llama_dir, lora=LORA, freeze=["encoder.*"], unfreeze=["encoder.norm.*"])
    with torch.no_grad():
        for p in fresh.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
        fresh.encoder.norm.running_mean.fill_(0.5)
    batch = _train_batch(model.tokenizer)
    assert float(fresh(batch)[0]) != pytest.approx(float(model(batch)[0]), abs=1e-4)
    fresh.load_checkpoint_state_dict(state)
    torch.testing.assert_close(fresh(batch)[0], model(batch)[0], atol=1e-6, rtol=1e-6)
    gen = _gen_batch(model.tokenizer)
    assert fresh.generate(gen, 6) == model.generate(gen, 6)

    with pytest.raises(ValueError, match="unknown names"):
        fresh.load_checkpoint_state_dict({**state, "projector.nope": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if not k.startswith("projector.")}
    with pytest.raises(ValueError, match="trainable names missing"):
        fresh.load_checkpoint_state_dict(missing)


@pytest.mark.parametrize("fixture", ["llama_dir", "qwen_dir"])
def test_batched_greedy_equals_one_by_one(fixture, request):
    model = tiny_speech_llm(request.getfixturevalue(fixture), lora=LORA)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    batch = _gen_batch(model.tokenizer)
    batched = model.generate(batch, 8)
    singles = [model.generate(select(batch, b), 8)[0] for b in range(3)]
    assert batched == singles
    assert model.generate(batch, 8) == batched  # deterministic
    assert all(0 < len(ids) <= 8 for ids in batched)
    # per-sequence bounds cut each answer
    cut = model.generate(batch, [2, 8, 5])
    assert cut == [batched[0][:2], batched[1], batched[2][:5]]


def test_generation_stops_at_stop_tokens_and_strips_them(llama_dir):
    model = tiny_speech_llm(llama_dir)
    batch = _gen_batch(model.tokenizer)
    full = model.generate(batch, 8)
    # sampling defaults in the checkpoint's generation config do not turn greedy search into sampling
    model.llm.generation_config.do_sample, model.llm.generation_config.temperature = True, 5.0
    model.llm.generation_config.top_k = 3
    assert model.generate(batch, 8) == full
    stop = full[0][3]
    model.stop_ids = model.stop_ids + [stop]
    out = model.generate(batch, 8)
    for before, after in zip(full, out):
        expect = before[:before.index(stop)] if stop in before else before
        assert after == expect


def test_beam_search_and_sampling_run(llama_dir):
    model = tiny_speech_llm(llama_dir)
    batch = _gen_batch(model.tokenizer)
    beams = model.generate(batch, 5, num_beams=3, repetition_penalty=1.2, no_repeat_ngram_size=2)
    assert len(beams) == 3 and all(len(b) <= 5 for b in beams)
    torch.manual_seed(0)
    sampled = model.generate(batch, 5, do_sample=True, temperature=0.7, top_p=0.9)
    assert len(sampled) == 3


def test_shapes_and_rates_are_checked(llama_dir):
    model = tiny_speech_llm(llama_dir)
    enc = TinyFbankEncoder(8, 16)
    with pytest.raises(ConfigError, match="projector output size 32 != LLM hidden size 64"):
        SpeechLLM(enc, LinearProjector(16, 32, downsample=2), model.llm, model.tokenizer)
    with pytest.raises(ConfigError, match="projector input size 12"):
        SpeechLLM(enc, LinearProjector(12, 64, downsample=2), model.llm, model.tokenizer)
    SpeechLLM(enc, LinearProjector(16, 64, downsample=1), model.llm, model.tokenizer)  # 50/s is fine
    enc.frame_rate = lambda: 100.0
    with pytest.raises(ConfigError, match="100 audio embeddings per second"):
        SpeechLLM(enc, LinearProjector(16, 64, downsample=1), model.llm, model.tokenizer)
    SpeechLLM(enc, LinearProjector(16, 64, downsample=1), model.llm, model.tokenizer, downsample_check=False)


def test_ctc_text_adds_its_ctc_loss_when_the_batch_has_transcripts(llama_dir):
    vocab = load_causal_lm(llama_dir).get_input_embeddings().num_embeddings
    model = tiny_speech_llm(llama_dir, projector="ctc_text", projector_conf={"vocab_size": vocab, "hidden_size": 8},
                            freeze=["encoder.*", "llm.*"])
    model.projector.bind_llm_embeddings(model.llm.get_input_embeddings())
    batch = _train_batch(model.tokenizer)
    model.train()
    _, plain = model(batch)
    assert "loss_ctc" not in plain  # no transcripts: no CTC term
    batch["transcript_ids"] = [transcript_ids(model.tokenizer, t) for t in ("and god said", "let there", "in")]
    loss, stats = model(batch)
    assert stats["loss_ctc"] > 0
    assert stats["loss"] == pytest.approx(stats["loss_ce"] + stats["loss_ctc"], rel=1e-5)  # ctc_weight 1
    assert stats["loss_ce"] == pytest.approx(plain["loss"], rel=1e-5)  # same SpecAugment-free encoder output
    loss.backward()
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None} == {"projector"}
    assert model.projector.head[0].weight.grad.abs().sum() > 0


def test_ctc_text_head_runs_once_per_step_with_the_loss_and_gradients_of_one_run_per_span(llama_dir):
    vocab = load_causal_lm(llama_dir).get_input_embeddings().num_embeddings
    model = tiny_speech_llm(llama_dir, projector="ctc_text", projector_conf={"vocab_size": vocab, "hidden_size": 8},
                            freeze=["encoder.*", "llm.*"])
    model.projector.bind_llm_embeddings(model.llm.get_input_embeddings())
    batch = _train_batch(model.tokenizer)  # whole-utterance and interleaved (partial) spans
    batch["transcript_ids"] = [transcript_ids(model.tokenizer, t) for t in ("and god said", "let there", "in")]
    model.train()
    calls = []
    model.projector.head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[:2]))

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss, _ = model(batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    shared_loss, shared_grads = step()
    assert len(calls) == 1 and calls[0][0] == 3  # the padded batch of the 3 utterances, once
    # the head computed again on the spans (as before the logits were shared): same loss and gradients
    calls.clear()
    per_span = model.audio_embeddings
    model.audio_embeddings = lambda batch, encoded=None, frame_logits=None: per_span(batch, encoded)
    loss, grads = step()
    assert len(calls) == 2
    assert loss.item() == pytest.approx(shared_loss.item(), rel=1e-5)
    assert grads.keys() == shared_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_ctc_pool_spans_train_a_frozen_llm(llama_dir):
    # token-rate audio: each span (interleaved ones too) gets as many embeddings as CTC tokens
    model = tiny_speech_llm(llama_dir, projector="ctc_pool", projector_conf={"vocab_size": 5, "hidden_size": 8},
                            freeze=["encoder.*", "llm.*"])
    torch.manual_seed(0)
    model.projector.ctc_weight.normal_()
    batch = _train_batch(model.tokenizer)
    pieces = model.audio_embeddings(batch)
    enc, enc_lens = model.encoder(batch["feats"], batch["feats_lens"])
    frames = embeddings = 0
    for spans, embs in zip(batch["audio_spans"], pieces):
        for (n, start, end), emb in zip(spans, embs):
            end = int(enc_lens[n]) if end == -1 else end
            _, count = model.projector.segments(enc[n:n + 1, start:end], torch.tensor([end - start]))
            assert len(emb) == int(count) >= 1
            frames, embeddings = frames + end - start, embeddings + len(emb)
    assert embeddings < frames  # runs of one label became one embedding
    model.train()
    loss, _ = model(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None} == {"projector"}
