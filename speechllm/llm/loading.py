"""Load the decoder-only LLM and its tokenizer: a hub id, a local ``save_pretrained`` directory,
or (tests, smoke runs) a tiny randomly initialized model from a config dict.

YAML (read by the speech-LLM build path)::

    llm: Qwen/Qwen2.5-0.5B-Instruct     # a hub id or a local directory ...
    llm_config: {model_type: llama, hidden_size: 64, ...}   # ... or a random model from a config
    llm_conf: {torch_dtype: bfloat16, attn_implementation: sdpa}

Sources are tried like the pretrained speech encoders (:mod:`speechllm.nets.encoders.pretrained`):
an existing directory; the local Hugging Face cache (the only source when ``HF_HUB_OFFLINE`` is
set); the hub, only after a short reachability probe. Without a network a hub id fails at once
with a :class:`ConfigError` that names the id and says how to point ``llm`` at a local copy.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import torch

from speechllm.nets.encoders.pretrained import load_from_hub_or_dir
from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "auto": "auto",  # the dtype recorded in the checkpoint's config.json
}


def resolve_dtype(name: str | torch.dtype) -> torch.dtype | str:
    """``"bfloat16"`` -> ``torch.bfloat16`` (also fp32/bf16/fp16 and ``"auto"``); ConfigError otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"llm_conf.torch_dtype: unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def no_llm_hub_message(name: str, reason: str, option: str = "llm") -> str:
    """The ConfigError text for an LLM that is neither local nor downloadable."""
    return (
        f"{option}: cannot load the LLM '{name}': {reason}. Without network access to the Hugging "
        f"Face hub the LLM must come from a local copy. Either set {option} to a local directory holding "
        f"the model and its tokenizer (on a machine with network: "
        f"AutoModelForCausalLM.from_pretrained('{name}').save_pretrained('/path/to/dir') and "
        f"AutoTokenizer.from_pretrained('{name}').save_pretrained('/path/to/dir'), or "
        f"hf download {name} --local-dir /path/to/dir; copy the directory here, then {option}: /path/to/dir), "
        f"or make a Hugging Face cache holding it available here and set HF_HOME to it together with "
        f"HF_HUB_OFFLINE=1."
    )


def _load_local_or_hub(load: Callable[[str, bool], T], name: str, option: str) -> T:
    """``load(source, local_files_only)`` from a directory, the local cache or a reachable hub."""
    return load_from_hub_or_dir(load, name, "llm", option, what="the LLM",
                                message=lambda reason: no_llm_hub_message(name, reason, option))


def load_causal_lm(name_or_path: str, torch_dtype: str = "float32", attn_implementation: str | None = "sdpa",
                   **kw: Any) -> "PreTrainedModel":  # noqa: F821 (transformers imported lazily)
    """``AutoModelForCausalLM.from_pretrained(name_or_path)`` in ``torch_dtype``, never hanging offline.

    ``attn_implementation``: ``"sdpa"`` (default), ``"eager"``, ``"flash_attention_2"`` or None (the
    library's choice). Other keywords go to ``from_pretrained``.
    """
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(torch_dtype)
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation

    def load(source: str, local_only: bool):
        # adapter_kwargs: transformers looks for a PEFT adapter_config.json without passing
        # local_files_only on, which retries an unreachable hub for ~20 s.
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only,
                                                    adapter_kwargs={"local_files_only": local_only}, **kw)

    model = _load_local_or_hub(load, name_or_path, "llm")
    logger.info("LLM %s: %s, %.1fM parameters, %s", name_or_path, type(model).__name__,
                sum(p.numel() for p in model.parameters()) / 1e6, model.dtype)
    return model


def load_tokenizer(name_or_path: str) -> "PreTrainedTokenizerBase":  # noqa: F821
    """``AutoTokenizer.from_pretrained(name_or_path)``; a missing pad token becomes the eos token,
    a missing chat template the documented default (:data:`speechllm.llm.prompting.DEFAULT_CHAT_TEMPLATE`)."""
    from transformers import AutoTokenizer

    from speechllm.llm.prompting import ensure_chat_template

    def load(source: str, local_only: bool):
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only)

    tokenizer = _load_local_or_hub(load, name_or_path, "llm")
    if tokenizer.eos_token is None:
        raise ConfigError(f"llm: the tokenizer of '{name_or_path}' has no eos token; generation could not stop")
    if tokenizer.pad_token is None:
        # Padding positions are masked out everywhere, so any id works; eos is always there.
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def build_causal_lm_from_config(config_dict: dict, torch_dtype: str = "float32",
                                attn_implementation: str | None = "sdpa") -> "PreTrainedModel":  # noqa: F821
    """A randomly initialized causal LM from ``{"model_type": "llama" | "qwen2" | ..., **config}``
    (``AutoConfig.for_model``); for tests and smoke runs (the ``llm_config:`` YAML key)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not isinstance(config_dict, dict) or "model_type" not in config_dict:
        raise ConfigError("llm_config: expected a mapping with a model_type (llama, qwen2, ...)")
    conf = dict(config_dict)
    model_type = conf.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **conf)
    except ValueError as e:
        raise ConfigError(f"llm_config: {e}") from e
    kw: dict[str, Any] = {"dtype": resolve_dtype(torch_dtype)}
    if kw["dtype"] == "auto":
        kw["dtype"] = torch.float32  # a config holds no weights to take a dtype from
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_config(config, **kw)
