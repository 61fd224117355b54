"""The ``lm`` task: train a causal LM (``speechllm.llm.mini_lm``) with the shared Trainer.

Two tokenizers (``speechllm.bin.train --task lm``):

- ``--tokenizer_dir``: the mini LLM's own byte-level BPE with a chat template (``lm_prepare_data``);
  the speech-LLM recipes pretrain their LLM this way.
- ``--token_list`` + ``--bpemodel``: the ASR token list (:class:`UnitTokenizer`), for an external
  LM in shallow fusion (``speechllm.search.lm_scorer``). A sentence is ``<sos/eos> tokens
  <sos/eos>``, every token after the first ``<sos/eos>`` is a target, the final ``<sos/eos>``
  included: the LM scores the end of a sentence. ``<blank>`` (id 0) pads and is never a target.

Data: a JSONL (``--train_jsonl``/``--valid_jsonl``) written by ``speechllm.bin.lm_prepare_data``,
one example per line::

    {"id": "text-00012", "kind": "text", "text": "in the beginning god created ..."}
    {"id": "Psa023_001-repeat/1", "kind": "chat", "task": "repeat", "answer_task": "repeat",
     "wording": "repeat/1", "split": "train", "ref": "Psa23:1", "sentence": "the lord is my shepherd ...",
     "messages": [{"role": "user", "content": "Repeat this sentence: ..."},
                  {"role": "assistant", "content": "the lord is my shepherd ..."}]}

or a Kaldi-style text file (``--train_text``/``--valid_text``): one sentence per line after an id,
``<id> <sentence>``, as a data dir's ``text`` (so the ASR's own transcripts can be used as they are;
add ids to plain text with ``awk '{print NR, $0}'``). Each line is one ``kind: text`` example, taken
as written (normalize it like the transcripts beforehand); lines with an id only are skipped and
counted.

Plain text: every token is a target. Chat (``--tokenizer_dir`` only): only the answer (the last
assistant turn and its ``<|end|>``) is a target, the prompt is ``-100``. Dataset ``.lengths`` are
token counts, so the config's ``batch_bins`` bounds the padded tokens of a batch.

Config keys read here (other keys are the Trainer's)::

    model_conf: {hidden_size: 256, num_hidden_layers: 4, ...}   # LlamaConfig keywords
    max_len: 512                                                 # longer examples are cut/dropped
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from speechllm.data.datadir import parse_text, read_table
from speechllm.text.tokenizer import Tokenizer, read_token_list
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError, load_yaml

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
EXAMPLE_KINDS = ("text", "chat")
TEXT_FORMATS = ("jsonl", "text")  # --train_jsonl / --train_text


class UnitTokenizer:
    """The ASR token list seen as an LM tokenizer: the part of a HF tokenizer that
    ``mini_lm.build_model`` and ``mini_lm.encode_text`` use. ``tokenizer(text).input_ids`` is
    ``<sos/eos> tokens <sos/eos>``; bos = eos = ``<sos/eos>`` (the last id), pad = ``<blank>`` (0).
    It has no chat template, so chat examples are refused."""

    chat_template = None

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos_token_id = self.eos_token_id = tokenizer.sos_eos_id
        self.pad_token_id = tokenizer.blank_id
        self.unk_token_id = tokenizer.unk_id

    def __len__(self) -> int:
        return self.tokenizer.vocab_size

    def __call__(self, text: str) -> SimpleNamespace:
        sos_eos = self.tokenizer.sos_eos_id
        return SimpleNamespace(input_ids=[sos_eos, *self.tokenizer.encode(text), sos_eos])


def load_unit_tokenizer(token_list: str | os.PathLike, bpemodel: str | os.PathLike) -> UnitTokenizer:
    """:class:`UnitTokenizer` of ``tokens.txt`` + sentencepiece model (they must belong together)."""
    try:
        return UnitTokenizer(Tokenizer(bpemodel, token_list))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_jsonl(path: str | os.PathLike, kinds: tuple[str, ...] = EXAMPLE_KINDS) -> list[dict]:
    """The objects of a JSONL file (of ``kinds``); errors name ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind == "text" and isinstance(obj.get("text"), str):
                pass
            elif kind == "chat" and isinstance(obj.get("messages"), list) and obj["messages"]:
                pass
            else:
                raise ConfigError(f"{path}:{lineno}: expected {{'kind': 'text', 'text': ...}} or "
                                  f"{{'kind': 'chat', 'messages': [...]}}")
            if kind not in kinds:
                raise ConfigError(f"{path}:{lineno}: a '{kind}' example, but this tokenizer takes only "
                                  f"{', '.join(kinds)} examples (chat needs a chat template: --tokenizer_dir)")
            out.append(obj)
    return out


def read_kaldi_text(path: str | os.PathLike) -> list[dict]:
    """``kind: text`` examples of a Kaldi-style ``<id> <sentence>`` file; errors (an empty line, a
    duplicate id, bad UTF-8) name ``file:line``; lines with no sentence are skipped and counted."""
    table = read_table(path, parse_text)
    out = [{"id": utt, "kind": "text", "text": text} for utt, (_, text) in table.items() if text]
    if len(out) < len(table):
        logger.warning("%s: skipped %d of %d lines with an id but no text", path, len(table) - len(out), len(table))
    return out


def read_examples(path: str | os.PathLike, fmt: str, kinds: tuple[str, ...] = EXAMPLE_KINDS) -> list[dict]:
    """Examples of a ``jsonl`` file or a Kaldi-style ``text`` file (see the module docstring)."""
    if fmt == "jsonl":
        return read_jsonl(path, kinds)
    if fmt == "text":
        return read_kaldi_text(path)
    raise ConfigError(f"unknown LM data format {fmt!r}; choose one of {TEXT_FORMATS}")


def tokenize_examples(examples: list[dict], tokenizer: Any, max_len: int) -> tuple[list[tuple[str, list[int], list[int]]], dict]:
    """``(id, input_ids, labels)`` per example (plain text cut to ``max_len``; chat examples
    longer than ``max_len`` dropped: their answer would be cut) and counts of what was done."""
    from speechllm.llm.mini_lm import encode_chat, encode_text

    out, counts = [], {"text": 0, "chat": 0, "text_truncated": 0, "chat_dropped": 0}
    for ex in examples:
        if ex["kind"] == "text":
            ids, labels = encode_text(tokenizer, ex["text"])
            if len(ids) > max_len:
                ids, labels = ids[:max_len], labels[:max_len]
                counts["text_truncated"] += 1
        else:
            ids, labels = encode_chat(tokenizer, ex["messages"])
            if len(ids) > max_len:
                counts["chat_dropped"] += 1
                continue
        counts[ex["kind"]] += 1
        out.append((str(ex.get("id", len(out))), ids, labels))
    return out, counts


class LMDataset(torch.utils.data.Dataset):
    """Tokenized examples of a JSONL or Kaldi-style text file (``fmt``); ``lengths`` in tokens."""

    def __init__(self, path: str | os.PathLike, tokenizer: Any, max_len: int = 512, fmt: str = "jsonl") -> None:
        kinds = EXAMPLE_KINDS if getattr(tokenizer, "chat_template", None) else ("text",)
        examples = read_examples(path, fmt, kinds)
        self.items, counts = tokenize_examples(examples, tokenizer, max_len)
        if not self.items:
            raise ConfigError(f"{path}: no usable examples")
        self.lengths = [len(ids) for _, ids, _ in self.items]
        self.pad_id = int(tokenizer.pad_token_id)
        targets = sum(sum(t != IGNORE_INDEX for t in labels) for _, _, labels in self.items)
        unk_id = getattr(tokenizer, "unk_token_id", None)
        unk = sum(ids.count(unk_id) for _, ids, _ in self.items) if unk_id is not None else 0
        logger.info("%s: %s examples (%s plain text, %s chat; %d text cut, %d chat dropped at %d tokens), "
                    "%s tokens (%s <unk>), %s targets", path, f"{len(self.items):,}", f"{counts['text']:,}",
                    f"{counts['chat']:,}", counts["text_truncated"], counts["chat_dropped"], max_len,
                    f"{sum(self.lengths):,}", f"{unk:,}", f"{targets:,}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        utt_id, ids, labels = self.items[i]
        return {"utt_id": utt_id, "input_ids": ids, "labels": labels, "pad_id": self.pad_id}


def collate_lm(items: list[dict]) -> dict:
    """Right-padded ``input_ids`` (pad id), ``labels`` (-100) and ``attention_mask``."""
    n = max(len(it["input_ids"]) for it in items)
    pad_id = items[0]["pad_id"]
    input_ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for b, it in enumerate(items):
        k = len(it["input_ids"])
        input_ids[b, :k] = torch.tensor(it["input_ids"])
        labels[b, :k] = torch.tensor(it["labels"])
        mask[b, :k] = 1
    return {"utt_ids": [it["utt_id"] for it in items], "input_ids": input_ids, "labels": labels,
            "attention_mask": mask}


class CausalLMTask(nn.Module):
    """``loss, stats = model(batch)`` around a HF causal LM: token-level cross entropy over the
    targets (labels shifted by one), ``acc`` (next-token accuracy on targets), ``ppl``."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, targets = logits[:, :-1].float(), batch["labels"][:, 1:]
        valid = targets != IGNORE_INDEX
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                           ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            acc = ((logits.argmax(-1) == targets) & valid).sum() / valid.sum().clamp(min=1)
            loss_value = float(loss.detach())
        return loss, {"loss": loss_value, "acc": float(acc), "ppl": float(torch.exp(loss.detach().clamp(max=30)))}


def load_tokenizer(tokenizer_dir: str | os.PathLike) -> Any:
    """The tokenizer saved by ``lm_prepare_data`` (``AutoTokenizer`` directory)."""
    from transformers import AutoTokenizer

    if not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer_dir}/tokenizer.json: not found (made by speechllm.bin.lm_prepare_data)")
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def build_model(config: dict, tokenizer: Any) -> CausalLMTask:
    """The mini Llama of ``config["model_conf"]`` for ``tokenizer``, wrapped for the Trainer."""
    from speechllm.llm.mini_lm import build_model as build_lm

    model_conf = config.get("model_conf") or {}
    if not isinstance(model_conf, dict):
        raise ConfigError(f"model_conf: expected a mapping, got {type(model_conf).__name__}")
    return CausalLMTask(build_lm(tokenizer, model_conf))


def build_dataset(config: dict, path: str | os.PathLike, tokenizer: Any, fmt: str = "jsonl") -> LMDataset:
    return LMDataset(path, tokenizer, max_len=int(config.get("max_len", 512)), fmt=fmt)


def load_unit_lm(lm_dir: str | os.PathLike, checkpoint: str | os.PathLike, tokenizer: Tokenizer) -> CausalLMTask:
    """The LM of an ``--task lm`` run on the ASR token list (``lm_dir/config.yaml`` + ``checkpoint``),
    for decoding with an ASR model whose tokenizer is ``tokenizer``.

    Raises ConfigError when the LM was trained with its own tokenizer, when the token list its
    config names (if that file is found) differs from ``tokenizer``'s, or when its vocabulary size
    is not the ASR's.
    """
    config_path = Path(lm_dir) / "config.yaml"
    config = load_yaml(config_path)
    if not config.get("token_list"):
        raise ConfigError(f"{config_path}: this LM was not trained on an ASR token list (tokenizer_dir "
                          f"{config.get('tokenizer_dir')}); shallow fusion needs one trained with "
                          "--token_list/--bpemodel of the ASR model")
    _check_same_token_list(Path(config["token_list"]), tokenizer)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: LM checkpoint not found")
    state = load_model_state_dict(checkpoint)
    emb = state.get("lm.model.embed_tokens.weight")
    if emb is not None and emb.size(0) != tokenizer.vocab_size:
        raise ConfigError(f"{checkpoint}: the LM has a vocabulary of {emb.size(0)} tokens, the ASR token list "
                          f"{tokenizer.token_list_path} {tokenizer.vocab_size}: the LM must be trained on the "
                          "ASR model's token list")
    model = build_model(config, UnitTokenizer(tokenizer))
    model.load_state_dict(state)
    logger.info("loaded LM %s (%.2f M parameters, %d tokens)", checkpoint,
                sum(p.numel() for p in model.parameters()) / 1e6, tokenizer.vocab_size)
    return model.eval()


def _check_same_token_list(lm_token_list: Path, tokenizer: Tokenizer) -> None:
    """Compare the LM's token list (when its file is found; the vocabulary size is checked on the
    weights in any case) with the ASR's, token by token."""
    if not lm_token_list.is_file():
        logger.warning("LM token list %s not found (relative to another directory?); checking the "
                       "vocabulary size only", lm_token_list)
        return
    tokens = read_token_list(lm_token_list)
    if tokens == tokenizer.token_list:
        return
    if len(tokens) != tokenizer.vocab_size:
        raise ConfigError(f"the LM's token list {lm_token_list} has {len(tokens)} tokens, the ASR's "
                          f"{tokenizer.token_list_path} {tokenizer.vocab_size}: the LM must be trained on "
                          "the ASR model's token list")
    line = next(i for i, (a, b) in enumerate(zip(tokens, tokenizer.token_list)) if a != b) + 1
    raise ConfigError(f"{lm_token_list}:{line}: token '{tokens[line - 1]}' of the LM differs from "
                      f"'{tokenizer.token_list[line - 1]}' of the ASR's {tokenizer.token_list_path}")
