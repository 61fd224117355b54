"""Prompts for the speech LLM: the LLM's own chat template with audio placeholders.

A user turn is text holding zero or more :data:`AUDIO_PLACEHOLDER` strings, e.g.
``"Transcribe: <|audio|>"`` or, interleaved, ``"the <|audio|> of the <|audio|> lord"``. The
template is rendered as a string, split at the placeholders, and each text piece is tokenized on
its own (``add_special_tokens=False``: the template already wrote bos/role tokens as text, and
the tokenizer parses special-token strings inside a piece). Audio slot ``i`` sits between text
pieces ``i`` and ``i + 1``; the model puts the projected audio embeddings there::

    <|user|>Transcribe: <|audio|><|end|><|assistant|>      (toy template)
    [<|user|> Trans cribe :  ] [audio 0] [<|end|> <|assistant|>]

The training target (:func:`response_ids`) is what the template appends for the assistant turn,
end-of-turn tokens included (``<|im_end|>\\n`` for ChatML), so the model learns to stop; generation
stops at :func:`stop_token_ids` (eos plus the template's end-of-turn tokens).

A tokenizer without a chat template (a base LLM) gets :data:`DEFAULT_CHAT_TEMPLATE`: plain-text
``<|user|>`` / ``<|assistant|>`` headers, the assistant turn ending in the eos token.

Caveat: each piece is tokenized separately, so tokenizers that add a prefix space to every call
(sentencepiece "legacy" Llama-2 tokenizers) start each piece with one; the same pieces are used in
training and inference, so the model sees one consistent format.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

AUDIO_PLACEHOLDER = "<|audio|>"

# For tokenizers without a template (base LLMs). The headers are plain text (no new tokens to
# learn); the assistant turn ends with eos, which is then the only stop token.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% else %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class PromptPieces:
    """A tokenized prompt with audio slots: ``text_ids[0], audio 0, text_ids[1], ..., text_ids[n_audio]``.

    ``text_ids``: 1-D LongTensors (possibly empty), ``len(text_ids) == n_audio + 1``.
    """

    text_ids: list[torch.Tensor]
    n_audio: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.n_audio is None:
            self.n_audio = len(self.text_ids) - 1
        if len(self.text_ids) != self.n_audio + 1 or self.n_audio < 0:
            raise ValueError(f"PromptPieces: {len(self.text_ids)} text pieces for {self.n_audio} audio slots; "
                             f"expected n_audio + 1")

    def num_text_tokens(self) -> int:
        """Total number of text tokens (all pieces)."""
        return sum(int(t.numel()) for t in self.text_ids)


def ensure_chat_template(tokenizer: Any) -> None:
    """Give ``tokenizer`` :data:`DEFAULT_CHAT_TEMPLATE` if it has no chat template (in place)."""
    if not getattr(tokenizer, "chat_template", None):
        logger.info("tokenizer has no chat template: using the default <|user|>/<|assistant|> template")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def _messages(user_content: str, system: str | None) -> list[dict[str, str]]:
    if system is not None and AUDIO_PLACEHOLDER in system:
        raise ValueError(f"the system prompt must not hold {AUDIO_PLACEHOLDER}: {system!r}")
    sys = [{"role": "system", "content": system}] if system is not None else []
    return sys + [{"role": "user", "content": user_content}]


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    template = None if getattr(tokenizer, "chat_template", None) else DEFAULT_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _ids(tokenizer: Any, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False) if text else [], dtype=torch.long)


def render_prompt_pieces(tokenizer: Any, user_content: str, system: str | None = None,
                         n_audio: int | None = None) -> PromptPieces:
    """The generation prompt for one user turn, tokenized into text pieces around the audio slots.

    ``n_audio``: the number of audio segments that will fill the slots; a different placeholder
    count raises ValueError (also when the template itself dropped or added placeholders).
    """
    count = user_content.count(AUDIO_PLACEHOLDER)
    if n_audio is not None and count != n_audio:
        raise ValueError(f"the prompt holds {count} {AUDIO_PLACEHOLDER} placeholder(s) but {n_audio} audio "
                         f"segment(s) were given: {user_content!r}")
    rendered = _render(tokenizer, _messages(user_content, system), add_generation_prompt=True)
    parts = rendered.split(AUDIO_PLACEHOLDER)
    if len(parts) - 1 != count:
        raise ValueError(f"the chat template turned {count} {AUDIO_PLACEHOLDER} placeholder(s) into "
                         f"{len(parts) - 1}: {rendered!r}")
    return PromptPieces([_ids(tokenizer, p) for p in parts], count)


def _assistant_tail(tokenizer: Any, user_content: str, response: str, system: str | None) -> str:
    """The text the template adds for the assistant turn (response + end-of-turn markup)."""
    messages = _messages(user_content, system)
    prefix = _render(tokenizer, messages, add_generation_prompt=True)
    full = _render(tokenizer, messages + [{"role": "assistant", "content": response}], add_generation_prompt=False)
    if not full.startswith(prefix):
        raise ValueError("the chat template renders the conversation with an assistant turn differently from "
                         f"the generation prompt, so the response cannot be cut off it: prompt {prefix!r}, "
                         f"conversation {full!r}")
    return full[len(prefix):]


def response_ids(tokenizer: Any, user_content: str, response: str, system: str | None = None) -> torch.Tensor:
    """Target ids of the assistant turn: the response and the end-of-turn tokens the template adds."""
    return _ids(tokenizer, _assistant_tail(tokenizer, user_content, response, system))


def transcript_ids(tokenizer: Any, text: str) -> torch.Tensor:
    """``text`` in the LLM's tokens, without special tokens (a projector's CTC target)."""
    return _ids(tokenizer, text)


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    # ChatML's <|im_end|> etc. may be registered only as added tokens flagged special.
    ids.update(i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special)
    return ids


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end a generated answer: ``eos_token_id`` and the special tokens the chat template
    puts after an assistant response (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``, ...)."""
    probe = "stop token probe"
    tail = _assistant_tail(tokenizer, "hello", probe, None)
    after = tail[tail.index(probe) + len(probe):]
    special = _special_ids(tokenizer)
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for i in tokenizer.encode(after, add_special_tokens=False) if after else []:
        if i in special and i not in stops:
            stops.append(i)
    if not stops:
        raise ValueError("the tokenizer has no eos token and its chat template ends turns without a special token")
    return stops
