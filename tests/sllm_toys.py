"""Tiny speech-LLM parts for tests, built offline: BPE tokenizers with chat templates, tiny random
Llama/Qwen2 models saved as ``save_pretrained`` directories, a tiny fbank encoder and batches.

* ``make_tiny_tokenizer(dir)``: byte-level BPE with ``<s> </s> <pad> <unk> <|user|> <|assistant|> <|end|>``,
  eos ``<|end|>``, template ``<|user|>...<|end|><|assistant|>...<|end|>``.
* ``make_chatml_tokenizer(dir)``: Qwen2-like: ``<|endoftext|>`` (eos, no pad token), ``<|im_start|>``,
  ``<|im_end|>``, the ChatML template with Qwen's default system prompt.
* ``make_tiny_llm(dir, family)``: a random ``llama``/``qwen2`` model + the tiny tokenizer in one
  directory that ``load_causal_lm``/``load_tokenizer`` read.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SENTENCES = [
    "in the beginning god created the heaven and the earth",
    "and the earth was without form and void",
    "and god said let there be light and there was light",
    "transcribe the audio please",
    "translate the speech into french",
]

TOY_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<s>{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}<|end|>"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bpe(special_tokens: list[str], vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    return tok


def make_tiny_tokenizer(tmp_dir: str | Path):
    """The toy tokenizer, saved into ``tmp_dir`` and loaded back with AutoTokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
    fast = PreTrainedTokenizerFast(tokenizer_object=_bpe(special), bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   extra_special_tokens=["</s>", "<|user|>", "<|assistant|>"])
    fast.chat_template = TOY_TEMPLATE
    fast.save_pretrained(str(tmp_dir))
    return AutoTokenizer.from_pretrained(str(tmp_dir))


def make_chatml_tokenizer(tmp_dir: str | Path):
    """A Qwen2-like ChatML tokenizer (eos ``<|endoftext|>``, no pad token), saved and loaded back."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    fast = PreTrainedTokenizerFast(tokenizer_object=_bpe(special), eos_token="<|endoftext|>",
                                   extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(tmp_dir))
    return AutoTokenizer.from_pretrained(str(tmp_dir))


def tiny_llm_config(family: str, vocab_size: int, **overrides) -> dict:
    """The ``llm_config`` dict of a tiny random model of ``family`` (llama or qwen2)."""
    conf = {"model_type": family, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": vocab_size,
            "max_position_embeddings": 512}
    conf.update(overrides)
    return conf


def make_tiny_llm(tmp_dir: str | Path, family: str = "llama", seed: int = 0, chatml: bool = False) -> str:
    """Save a tiny random ``family`` LLM and its tokenizer (toy, or ChatML) into ``tmp_dir``; returns the dir."""
    from speechllm.llm.loading import build_causal_lm_from_config

    out = Path(tmp_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_chatml_tokenizer(out) if chatml else make_tiny_tokenizer(out)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(seed)
    model = build_causal_lm_from_config(tiny_llm_config(family, len(tok), bos_token_id=tok.bos_token_id,
                                                        eos_token_id=tok.eos_token_id, pad_token_id=pad))
    model.save_pretrained(str(out))
    return str(out)


class TinyFbankEncoder(nn.Module):
    """An fbank encoder after the encoder contract: 2x frame subsampling (stride-2 conv), a
    BatchNorm (buffers: running stats) and a dropout; padded output frames are zero."""

    input_kind = "fbank"

    def __init__(self, input_size: int = 8, output_size: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(input_size, output_size, 2, stride=2)
        self.norm = nn.BatchNorm1d(output_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(output_size, output_size)
        self._size = output_size

    def output_size(self) -> int:
        return self._size

    def frame_rate(self) -> float:
        return 50.0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_lens = torch.div(lengths, 2, rounding_mode="floor")
        h = self.norm(self.conv(x.transpose(1, 2))).transpose(1, 2)
        h = self.out(self.dropout(torch.tanh(h)))
        valid = torch.arange(h.size(1))[None, :] < out_lens[:, None]
        return h * valid.unsqueeze(-1), out_lens


def random_feats(lengths: list[int], dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded random features ``[N, max(lengths), dim]`` and their lengths."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths), dim)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, dim, generator=g)
    return x, torch.tensor(lengths)


def sllm_config(llm_dir: str | None, **overrides) -> dict:
    """A ``speechllm.tasks.sllm`` build config around :class:`TinyFbankEncoder` (registered as
    ``tiny_fbank`` in ``ENCODERS`` by the tests) and the tiny LLM in ``llm_dir``."""
    conf = {"input_size": 8, "encoder": "tiny_fbank", "encoder_conf": {"output_size": 16},
            "projector": "linear", "projector_conf": {"downsample": 2, "hidden_size": 32},
            "llm": llm_dir, "llm_conf": {"torch_dtype": "float32"}, "lora": None}
    conf.update(overrides)
    return conf


def tiny_speech_llm(llm_dir: str | None, seed: int = 0, llm: nn.Module | None = None, **overrides):
    """A SpeechLLM of :class:`TinyFbankEncoder`, a projector and the tiny LLM of ``llm_dir`` (or
    ``llm`` with the tokenizer of ``llm_dir``), with the config's ``lora``/``freeze``/``unfreeze``;
    seeded (the same seed gives the same weights), in eval mode."""
    from speechllm.llm.adapters import apply_freezing, apply_lora
    from speechllm.llm.loading import load_causal_lm, load_tokenizer
    from speechllm.models.speech_llm import SpeechLLM
    from speechllm.nets.projectors import PROJECTORS

    config = sllm_config(llm_dir, **overrides)
    torch.manual_seed(seed)
    encoder = TinyFbankEncoder(config["input_size"], **config["encoder_conf"])
    if llm is None:
        llm = load_causal_lm(llm_dir, **config["llm_conf"])
    projector = PROJECTORS[config["projector"]](encoder.output_size(), llm.config.hidden_size,
                                                **config["projector_conf"])
    if config["lora"]:
        llm = apply_lora(llm, **config["lora"])
    model = SpeechLLM(encoder, projector, llm, load_tokenizer(llm_dir), config=config)
    apply_freezing(model, config.get("freeze") or (), config.get("unfreeze") or ())
    return model.eval()


def make_batch(tokenizer, feats_lens: list[int], sequences: list[tuple[str, list[tuple[int, int, int]], str | None]],
               seed: int = 0) -> dict:
    """A speech-LLM batch: utterances of ``feats_lens`` frames and ``(user_content, audio_spans,
    response)`` per sequence (``response`` None -> no targets, for generation)."""
    from speechllm.llm.prompting import render_prompt_pieces, response_ids

    feats, lens = random_feats(feats_lens, seed=seed)
    batch = {"utt_ids": [f"utt{i}" for i in range(len(feats_lens))], "feats": feats, "feats_lens": lens,
             "prompts": [render_prompt_pieces(tokenizer, u, n_audio=len(s)) for u, s, _ in sequences],
             "audio_spans": [list(s) for _, s, _ in sequences]}
    if all(r is not None for _, _, r in sequences):
        batch["response_ids"] = [response_ids(tokenizer, u, r) for u, _, r in sequences]
    return batch


def select(batch: dict, b: int) -> dict:
    """Sequence ``b`` of ``batch`` alone (with only the utterances it uses)."""
    spans = batch["audio_spans"][b]
    used = sorted({n for n, _, _ in spans})
    remap = {n: i for i, n in enumerate(used)}
    lens = batch["feats_lens"][used] if used else batch["feats_lens"][:1]
    feats = batch["feats"][used][:, : int(lens.max())] if used else batch["feats"][:1]
    out = {"utt_ids": [batch["utt_ids"][n] for n in used] or batch["utt_ids"][:1], "feats": feats,
           "feats_lens": lens, "prompts": [batch["prompts"][b]],
           "audio_spans": [[(remap[n], s, e) for n, s, e in spans]]}
    if "response_ids" in batch:
        out["response_ids"] = [batch["response_ids"][b]]
    return out
