"""What the speech LLM trains: freezing by name patterns, LoRA on the LLM, and the merged export.

YAML::

    freeze: ["encoder.*", "llm.*"]          # fnmatch patterns on parameter names
    unfreeze: ["encoder.layers.11.*"]       # applied after freeze: unfreeze wins
    lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}   # or all-linear, or null

Parameter names are those of :class:`~speechllm.models.speech_llm.SpeechLLM`: ``encoder.*``,
``projector.*``, ``llm.*``. With LoRA the LLM is a ``PeftModel`` and its names gain the wrapper's
``base_model.model.`` and ``.base_layer`` parts; patterns match the names with or without them, so
``llm.model.embed_tokens.*`` means the same parameter either way.
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from speechllm.utils.config import ConfigError, save_config

logger = logging.getLogger(__name__)

_PEFT_PARTS = re.compile(r"(?<![^.])base_model\.model\.|\.base_layer(?=\.)")


def canonical_name(name: str) -> str:
    """``name`` without the PEFT wrapper parts (``base_model.model.``, ``.base_layer``)."""
    return _PEFT_PARTS.sub("", name)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(canonical_name(name), pattern)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": n, "frozen": n, "total": n}`` in scalar parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}


def apply_freezing(model: nn.Module, freeze: Iterable[str] = (), unfreeze: Iterable[str] = ()) -> dict[str, int]:
    """Set ``requires_grad=False`` on parameters matching a ``freeze`` pattern, then ``True`` on
    those matching an ``unfreeze`` pattern; others keep their state. Returns :func:`count_parameters`.

    A pattern that matches no parameter raises :class:`ConfigError` naming it (a typo would
    otherwise silently train, or freeze, the wrong thing).
    """
    if isinstance(freeze, str) or isinstance(unfreeze, str):
        raise ConfigError("freeze/unfreeze: expected lists of patterns, e.g. freeze: ['llm.*']")
    freeze, unfreeze = list(freeze or ()), list(unfreeze or ())
    named = list(model.named_parameters())
    for key, patterns, flag in (("freeze", freeze, False), ("unfreeze", unfreeze, True)):
        for pattern in patterns:
            hits = [p for name, p in named if _matches(name, pattern)]
            if not hits:
                examples = ", ".join(sorted({n.split(".", 1)[0] + ".*" for n, _ in named}))
                raise ConfigError(f"{key}: pattern {pattern!r} matches no parameter (top-level names: {examples})")
            for p in hits:
                p.requires_grad_(flag)
    lora = [p for name, p in named if "lora_" in name]
    if lora and not any(p.requires_grad for p in lora):
        raise ConfigError(f"freeze: the patterns {freeze} froze the LoRA adapters too; 'lora' already freezes "
                          f"the LLM base, so leave llm.* out of freeze")
    counts = count_parameters(model)
    logger.info("trainable %s of %s parameters (%.2f%%)", f"{counts['trainable']:,}", f"{counts['total']:,}",
                100.0 * counts["trainable"] / max(counts["total"], 1))
    return counts


def apply_lora(llm: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.05,
               target_modules: list[str] | str = "all-linear") -> nn.Module:
    """Wrap ``llm`` in a PEFT LoRA model: the base weights frozen, the adapters trainable.

    ``target_modules``: module names (``[q_proj, v_proj]``) or ``"all-linear"`` (every linear
    layer except the output head).
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(target_modules, str) and target_modules != "all-linear":
        raise ConfigError(f"lora.target_modules: expected a list of module names or 'all-linear', got {target_modules!r}")
    config = LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=float(dropout), bias="none",
                        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
                        task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5; nothing to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model = get_peft_model(llm, config)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"lora.target_modules: {e}") from e
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    logger.info("LoRA r=%d alpha=%s on %s: %s adapter parameters", int(r), alpha, target_modules, f"{n:,}")
    return model


def scale_lora(model: nn.Module, factor: float) -> int:
    """Multiply every LoRA update of ``model`` by ``factor`` (inference only; 0 = the LLM as it
    was before fine-tuning, 1 = as trained). A smaller scale gives back some of the frozen LLM's
    own behaviors that the adapters trained over (SALMONN's "activation tuning"). Returns the
    number of LoRA layers scaled; raises :class:`ConfigError` when ``factor != 1`` and there are none.
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if factor != 1.0 and not layers:
        raise ConfigError(f"lora_scale {factor}: the model has no LoRA layers (trained without LoRA, or "
                          "exported with LoRA merged)")
    for layer in layers:
        layer.scale_layer(factor)
    return len(layers)


def merged_llm(llm: nn.Module) -> nn.Module:
    """A copy of ``llm`` with LoRA adapters merged into the base weights (a plain transformers
    model); ``llm`` itself is left as it is."""
    from peft import PeftModel

    llm = copy.deepcopy(llm)
    return llm.merge_and_unload() if isinstance(llm, PeftModel) else llm


def merge_and_export(speech_llm: Any, out_dir: str | Path, config: dict | None = None) -> Path:
    """Write a standalone speech LLM directory that :meth:`SpeechLLM.from_exported` reads::

        out_dir/llm/        the LLM with LoRA merged (save_pretrained) and its tokenizer
        out_dir/speech.pt   {"encoder": state dict, "projector": state dict}
        out_dir/config.yaml the build config: llm: llm (relative), no lora/freeze/encoder_init
        out_dir/cmvn.json   the feature statistics (when the config normalizes features)

    ``config``: the build config of the model (the training run's ``config.yaml``); default
    ``speech_llm.config``. The LLM of ``speech_llm`` itself keeps its adapters.
    """
    config = copy.deepcopy(config if config is not None else getattr(speech_llm, "config", None))
    if not config or "encoder" not in config:
        raise ValueError("merge_and_export: no build config to rebuild the model from; pass config= "
                         "(the training config.yaml) or build the SpeechLLM with config=")
    out = Path(out_dir)
    (out / "llm").mkdir(parents=True, exist_ok=True)
    llm = merged_llm(speech_llm.llm)
    llm.save_pretrained(str(out / "llm"))
    speech_llm.tokenizer.save_pretrained(str(out / "llm"))
    del llm
    torch.save({"encoder": speech_llm.encoder.state_dict(), "projector": speech_llm.projector.state_dict()},
               out / "speech.pt")

    config["llm"] = "llm"  # relative to the export directory
    # The merged LLM and the saved weights replace what these keys built or loaded.
    for key in ("llm_config", "tokenizer", "llm_tokenizer", "lora", "freeze", "unfreeze", "encoder_init"):
        config.pop(key, None)
    if hasattr(speech_llm.projector, "exported_conf"):  # e.g. ctc_pool: its ASR head is in speech.pt
        config["projector_conf"] = speech_llm.projector.exported_conf(dict(config.get("projector_conf") or {}))
    stats = (config.get("normalize_conf") or {}).get("stats_file")
    if config.get("normalize") and stats:
        shutil.copyfile(stats, out / "cmvn.json")
        config["normalize_conf"]["stats_file"] = "cmvn.json"
    save_config(config, out / "config.yaml")
    logger.info("exported the speech LLM (LoRA merged) to %s", out)
    return out
