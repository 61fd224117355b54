"""Export a trained ``--task lm`` checkpoint as a Hugging Face model directory.

    python -m speechllm.bin.lm_export --exp_dir exp/lm_pretrain \\
        --checkpoint exp/lm_pretrain/valid.loss.ave.pt --out_dir exp/lm_pretrain/hf

Rebuilds the model from ``EXP/config.yaml`` and the tokenizer directory it names (or
``--tokenizer_dir``), loads the checkpoint's weights, and writes model, generation config and
tokenizer into ``OUT_DIR`` with ``save_pretrained``; ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load it like a hub model. The export is reloaded and its
logits compared with the trained model's before the command succeeds. ``export_info.yaml`` records
the source checkpoint, its epochs, the git commit and the parameter count.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import torch
import yaml

import speechllm
from speechllm.bin import exit_on_user_error
from speechllm.train.checkpoint import load_checkpoint
from speechllm.utils.config import ConfigError, atomic_write_text, load_yaml
from speechllm.utils.git import git_commit
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("lm_export")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True, help="the training run (config.yaml)")
    p.add_argument("--checkpoint", default=None, help="default: EXP/valid.loss.ave.pt")
    p.add_argument("--tokenizer_dir", default=None, help="default: the tokenizer_dir of EXP/config.yaml")
    p.add_argument("--out_dir", required=True)
    return p


def export(exp_dir: Path, checkpoint: Path, tokenizer_dir: Path | None, out_dir: Path) -> dict:
    """Write the HF directory; returns what ``export_info.yaml`` records."""
    from transformers import AutoModelForCausalLM

    from speechllm.llm.mini_lm import count_parameters, save_pretrained_dir
    from speechllm.tasks.lm import build_model, load_tokenizer

    config = load_yaml(exp_dir / "config.yaml")
    tokenizer_dir = tokenizer_dir or config.get("tokenizer_dir")
    if not tokenizer_dir and config.get("token_list"):
        raise ConfigError(f"{exp_dir} is an LM over the ASR token list {config['token_list']}: it is used as is "
                          "(asr_inference --lm_dir), not exported; export takes LMs with their own tokenizer")
    if not tokenizer_dir:
        raise ConfigError(f"{exp_dir}/config.yaml names no tokenizer_dir: give --tokenizer_dir")
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(config, tokenizer)
    ckpt = load_checkpoint(checkpoint)
    state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{checkpoint}: does not fit the model of {exp_dir}/config.yaml "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    lm = model.lm.eval()
    save_pretrained_dir(lm, tokenizer, out_dir)

    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir)).eval()
    probe = torch.tensor([tokenizer("in the beginning god created the heaven and the earth").input_ids])
    with torch.no_grad():
        diff = (reloaded(probe).logits - lm(probe).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"{out_dir}: reloaded model differs from the checkpoint (max logit diff {diff:.3g})")
    return {
        "source_checkpoint": str(checkpoint),
        "epochs": ckpt.get("epochs", ckpt.get("epoch")),
        "source_exp_dir": str(exp_dir),
        "tokenizer_dir": str(tokenizer_dir),
        "parameters": count_parameters(lm),
        "vocab_size": len(tokenizer),
        "speechllm_version": speechllm.__version__,
        "commit": git_commit(Path(__file__).parent),
        "exported_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    exp_dir, out_dir = Path(args.exp_dir), Path(args.out_dir)
    checkpoint = Path(args.checkpoint) if args.checkpoint else exp_dir / "valid.loss.ave.pt"
    info = export(exp_dir, checkpoint, Path(args.tokenizer_dir) if args.tokenizer_dir else None, out_dir)
    atomic_write_text(out_dir / "export_info.yaml", yaml.safe_dump(info, sort_keys=False))
    log.info("exported %s (%.2f M parameters, %d tokens) -> %s", checkpoint, info["parameters"] / 1e6,
             info["vocab_size"], out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
