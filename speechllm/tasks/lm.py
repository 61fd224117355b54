"""The ``lm`` task: pretrain a causal LM (``speechllm.llm.mini_lm``) with the shared Trainer.

Data: a JSONL written by ``speechllm.bin.lm_prepare_data``, one example per line::

    {"id": "text-00012", "kind": "text", "text": "in the beginning god created ..."}
    {"id": "Psa023_001-repeat/1", "kind": "chat", "task": "repeat", "answer_task": "repeat",
     "wording": "repeat/1", "split": "train", "ref": "Psa23:1", "sentence": "the lord is my shepherd ...",
     "messages": [{"role": "user", "content": "Repeat this sentence: ..."},
                  {"role": "assistant", "content": "the lord is my shepherd ..."}]}

Plain text: every token is a target. Chat: only the answer (the last assistant turn and its
``<|end|>``) is a target, the prompt is ``-100``. Dataset ``.lengths`` are token counts, so the
config's ``batch_bins`` bounds the padded tokens of a batch.

Config keys read here (other keys are the Trainer's)::

    model_conf: {hidden_size: 256, num_hidden_layers: 4, ...}   # LlamaConfig keywords
    max_len: 512                                                 # longer examples are cut/dropped
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSONL file; errors name ``file:line``."""
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
            out.append(obj)
    return out


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
    """Tokenized examples of a JSONL; ``lengths`` in tokens."""

    def __init__(self, jsonl: str | os.PathLike, tokenizer: Any, max_len: int = 512) -> None:
        examples = read_jsonl(jsonl)
        self.items, counts = tokenize_examples(examples, tokenizer, max_len)
        if not self.items:
            raise ConfigError(f"{jsonl}: no usable examples")
        self.lengths = [len(ids) for _, ids, _ in self.items]
        self.pad_id = int(tokenizer.pad_token_id)
        targets = sum(sum(t != IGNORE_INDEX for t in labels) for _, _, labels in self.items)
        logger.info("%s: %s examples (%s plain text, %s chat; %d text cut, %d chat dropped at %d tokens), "
                    "%s tokens, %s targets", jsonl, f"{len(self.items):,}", f"{counts['text']:,}",
                    f"{counts['chat']:,}", counts["text_truncated"], counts["chat_dropped"], max_len,
                    f"{sum(self.lengths):,}", f"{targets:,}")

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


def build_dataset(config: dict, jsonl: str | os.PathLike, tokenizer: Any) -> LMDataset:
    return LMDataset(jsonl, tokenizer, max_len=int(config.get("max_len", 512)))
