"""A mini causal LM made offline: byte-level BPE tokenizer, chat template, small Llama.

No pretrained LLM can be downloaded in the offline recipes, so ``egs/mini_synth/sllm1``
pretrains one of a few million parameters on KJV text and text-task instructions. Everything is
saved with ``save_pretrained`` into one directory that loads like a hub model::

    AutoTokenizer.from_pretrained(dir); AutoModelForCausalLM.from_pretrained(dir)

Tokenizer (:func:`train_tokenizer`): byte-level BPE from the ``tokenizers`` library with a
prefix space (a word after a special token is the same token as inside a sentence, so copying
a word into the answer is one-to-one), ``<s>`` prepended to plain text, and the special tokens
``SPECIAL_TOKENS``; ``<|end|>`` closes every chat turn and is the eos token (generation stops
there); ``</s>`` exists for compatibility and is not used.

Chat template (``CHAT_TEMPLATE``)::

    <s><|system|>SYSTEM<|end|><|user|>PROMPT<|end|><|assistant|>ANSWER<|end|>

the system turn optional; ``add_generation_prompt=True`` ends with ``<|assistant|>``. The
assistant part is wrapped in ``{% generation %}`` so ``return_assistant_tokens_mask`` works.

Training targets (:func:`encode_chat`, :func:`encode_text`): labels are the input ids with
``IGNORE_INDEX`` where no loss is taken (prompt and ``<s>`` of chat examples; ``<s>`` of plain
text); the model shifts them itself (HF convention).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
BOS, EOS_UNUSED, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# Order = ids 0..7.
SPECIAL_TOKENS = [UNK, BOS, EOS_UNUSED, PAD, SYSTEM, USER, ASSISTANT, END]
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# The model of conf/lm_pretrain.yaml's ``model_conf`` (LlamaConfig keywords): ~3.9 M parameters
# with a 3,000-token vocabulary.
MODEL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 768,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1.0e-5,
    "attention_dropout": 0.0,
}


# ----------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------
def train_tokenizer(texts: Iterable[str], vocab_size: int = 3000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens (specials included) on ``texts``."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(f"vocab_size {vocab_size} < {len(SPECIAL_TOKENS) + 256} (special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The ``transformers`` tokenizer around a trained ``tokenizers.Tokenizer``, chat template set."""
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=[EOS_UNUSED, SYSTEM, USER, ASSISTANT],
        model_max_length=MODEL_DEFAULTS["max_position_embeddings"], padding_side="right",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def chat_ids(tokenizer: PreTrainedTokenizerFast, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True)
    return list(out["input_ids"])


def encode_chat(tokenizer: PreTrainedTokenizerFast, messages: list[dict]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a conversation ending with the assistant's answer: only the
    last assistant turn (its tokens and its ``<|end|>``) is a target."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("encode_chat: the last message must be the assistant's answer")
    ids = chat_ids(tokenizer, messages)
    prompt = chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)
    if ids[: len(prompt)] != prompt:  # cannot happen with special-token turn boundaries
        raise ValueError("encode_chat: the prompt's tokens are not a prefix of the conversation's")
    return ids, [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of plain text: ``<s>`` + tokens, every token after ``<s>`` a target."""
    ids = list(tokenizer(text).input_ids)
    return ids, [IGNORE_INDEX] + ids[1:]


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------
def build_model(tokenizer: PreTrainedTokenizerFast, model_conf: dict | None = None) -> LlamaForCausalLM:
    """A freshly initialized ``LlamaForCausalLM`` for ``tokenizer``; ``model_conf`` overrides
    ``MODEL_DEFAULTS`` (any ``LlamaConfig`` keyword)."""
    conf = {**MODEL_DEFAULTS, **(model_conf or {})}
    for fixed in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
        if fixed in conf:
            raise ConfigError(f"model_conf.{fixed}: set from the tokenizer, do not give it")
    try:
        config = LlamaConfig(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **conf,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model_conf: {e}") from None
    model = LlamaForCausalLM(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    return model


def save_pretrained_dir(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | os.PathLike) -> None:
    """Model (safetensors + config + generation config) and tokenizer into one directory."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
