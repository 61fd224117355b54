"""Train a model for a task with the shared Trainer; the entry point the recipes call.

    python -m speechllm.bin.train --task asr --config conf/train.yaml \
        --train_data_dir dump/fbank/train_sp --valid_data_dir dump/fbank/dev \
        --token_list data/token_list/bpe500/tokens.txt --bpemodel data/token_list/bpe500/bpe.model \
        --exp_dir exp/asr_train --ngpu 0 [--key value ...]

    torchrun --standalone --nproc_per_node 2 -m speechllm.bin.train ... --ngpu 1   # DDP, 1 GPU/process

    python -m speechllm.bin.train --task lm --config conf/lm_pretrain.yaml \
        --train_jsonl data/lm/train.jsonl --valid_jsonl data/lm/valid.jsonl \
        --tokenizer_dir data/lm/tokenizer --exp_dir exp/lm_pretrain   # a causal LM (lm_prepare_data)

    python -m speechllm.bin.train --task lm --config conf/train_lm.yaml \
        --train_text data/local/lm_train.txt --valid_text data/dev/text \
        --token_list data/token_list/bpe200/tokens.txt --bpemodel data/token_list/bpe200/tokenizer.model \
        --exp_dir exp/lm_train_lm_bpe200   # an LM over the ASR's tokens, for shallow fusion

Any other ``--key value`` overrides the config (dotted keys reach into nested mappings:
``--encoder_conf.num_blocks 2``). Training resumes from ``EXP/checkpoints/last.pt`` when it exists
(``--resume false`` starts over). ``--print_config`` prints the resolved config (Trainer defaults
included) and exits.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

import yaml

import speechllm.tasks.asr
import speechllm.tasks.lm
import speechllm.tasks.sllm
from speechllm.bin import exit_on_user_error
from speechllm.train.distributed import cleanup
from speechllm.train.trainer import NonFiniteLossError, Trainer, resolve_config, set_seed
from speechllm.utils.config import ConfigError, load_config
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)

# task name -> module with build_model(config, vocab_size) -> nn.Module (the asr one also has
# build_dataset(config, data_dir, tokenizer), which reads features or raw audio by ``input``);
# lm: build_model(config, tokenizer) and build_dataset(config, path, tokenizer, fmt)
TASKS = {"asr": speechllm.tasks.asr, "lm": speechllm.tasks.lm, "sllm": speechllm.tasks.sllm}

# Per-task defaults under the recipe config (the recipe's own keys win).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "asr": {"best_model_criterion": [["valid", "acc", "max"]]},
    "lm": {"best_model_criterion": [["valid", "loss", "min"]]},
    "sllm": {"best_model_criterion": [["valid", "acc", "max"]]},
}


def setup_asr(args: argparse.Namespace, config: dict) -> tuple[Any, Any, Any, Callable]:
    """Tokenizer, train/valid datasets (features or raw audio, by the config's ``input``), the
    model for its vocabulary, and the collate function."""
    from speechllm.data.dataset import collate_asr
    from speechllm.text.tokenizer import Tokenizer

    for name in ("train_data_dir", "valid_data_dir", "token_list", "bpemodel"):
        if getattr(args, name) is None:
            raise ConfigError(f"--task asr needs --{name}")
    tokenizer = Tokenizer(args.bpemodel, args.token_list)
    config["input"] = TASKS["asr"].resolve_input(config)  # explicit in config.yaml, for decoding
    train_set = TASKS["asr"].build_dataset(config, args.train_data_dir, tokenizer)
    valid_set = TASKS["asr"].build_dataset(config, args.valid_data_dir, tokenizer)
    model = TASKS["asr"].build_model(config, tokenizer.vocab_size)
    logger.info("vocabulary %d tokens; %s train and %s valid utterances",
                tokenizer.vocab_size, f"{len(train_set):,}", f"{len(valid_set):,}")
    return model, train_set, valid_set, collate_asr


def _one_of(args: argparse.Namespace, *names: str) -> str:
    """The one of ``--names`` that is given (an error for none or several)."""
    given = [n for n in names if getattr(args, n) is not None]
    if len(given) != 1:
        raise ConfigError(f"--task lm needs {'one' if not given else 'only one'} of "
                          + " / ".join(f"--{n}" for n in names))
    return given[0]


def setup_lm(args: argparse.Namespace, config: dict) -> tuple[Any, Any, Any, Callable]:
    """Tokenizer (``--tokenizer_dir`` of lm_prepare_data, or the ASR's ``--token_list`` +
    ``--bpemodel``), datasets (JSONL or Kaldi-style text), the causal LM."""
    task = TASKS["lm"]
    if _one_of(args, "tokenizer_dir", "token_list") == "tokenizer_dir":
        tokenizer = task.load_tokenizer(args.tokenizer_dir)
    elif args.bpemodel is None:
        raise ConfigError("--task lm with --token_list needs --bpemodel")
    else:
        tokenizer = task.load_unit_tokenizer(args.token_list, args.bpemodel)
    sets = []
    for split in ("train", "valid"):
        name = _one_of(args, f"{split}_jsonl", f"{split}_text")
        sets.append(task.build_dataset(config, getattr(args, name), tokenizer, fmt=name.split("_")[1]))
    return task.build_model(config, tokenizer), *sets, task.collate_lm


def setup_sllm(args: argparse.Namespace, config: dict) -> tuple[Any, Any, Any, Callable, Callable]:
    """Speech LLM: audio (or features) + transcripts, the model (encoder, projector, LLM with its
    tokenizer), and collates that put each transcript behind a transcription prompt."""
    for name in ("train_data_dir", "valid_data_dir"):
        if getattr(args, name) is None:
            raise ConfigError(f"--task sllm needs --{name}")
    task = TASKS["sllm"]
    config["input"] = task.resolve_input(config)
    train_set = task.build_dataset(config, args.train_data_dir)
    valid_set = task.build_dataset(config, args.valid_data_dir)
    model = task.build_model(config)
    wordings = task.prompt_wordings(config)
    system = config.get("system_prompt")
    logger.info("%s train and %s valid utterances; %d prompt wordings", f"{len(train_set):,}",
                f"{len(valid_set):,}", len(wordings))
    train_collate = task.SpeechLLMCollate(model.tokenizer, wordings, True, system, seed=int(config["seed"]))
    if config.get("mtbi"):
        from speechllm.mtbi.collate import build_collate

        train_collate = build_collate(config, model.tokenizer, model)
    return (model, train_set, valid_set, train_collate, task.SpeechLLMCollate(model.tokenizer, wordings, False, system))


# task name -> setup(args, config) -> (model, train_dataset, valid_dataset, collate_fn[, valid_collate_fn])
SETUPS: dict[str, Callable] = {"asr": setup_asr, "lm": setup_lm, "sllm": setup_sllm}
LAUNCHER_PATHS = ("train_data_dir", "valid_data_dir", "token_list", "bpemodel",
                  "train_jsonl", "valid_jsonl", "train_text", "valid_text", "tokenizer_dir")


def _bool(text: str) -> bool:
    value = yaml.safe_load(text)
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def get_parser() -> argparse.ArgumentParser:
    """The launcher's own arguments; everything else is a ``--key value`` config override."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--config", help="YAML training config (model and Trainer keys)")
    p.add_argument("--exp_dir", help="where config.yaml, checkpoints/, tensorboard/ and images/ go")
    p.add_argument("--train_data_dir")
    p.add_argument("--valid_data_dir")
    p.add_argument("--token_list", help="tokens.txt (line number = token id); lm: an LM over the ASR's tokens")
    p.add_argument("--bpemodel", help="sentencepiece model")
    p.add_argument("--train_jsonl", help="lm: training examples (speechllm.bin.lm_prepare_data)")
    p.add_argument("--valid_jsonl", help="lm: validation examples")
    p.add_argument("--train_text", help="lm: training sentences, '<id> <sentence>' per line (a data dir's text)")
    p.add_argument("--valid_text", help="lm: validation sentences, same format")
    p.add_argument("--tokenizer_dir", help="lm: the tokenizer directory (AutoTokenizer), instead of --token_list")
    p.add_argument("--ngpu", type=int, default=None,
                   help="0: CPU; >0: CUDA, one GPU per process (start N processes with torchrun)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="same as --ngpu 0 / --ngpu 1")
    p.add_argument("--resume", type=_bool, default=True, help="continue from EXP/checkpoints/last.pt (default true)")
    p.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    return p


def build_config(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Task defaults <- config file <- overrides <- launcher arguments, resolved with Trainer defaults."""
    config = {**TASK_DEFAULTS.get(args.task, {}), **load_config(args.config, overrides)}
    if args.ngpu is not None:
        config["ngpu"] = args.ngpu
    elif args.device is not None:
        config["ngpu"] = 1 if args.device == "cuda" else 0
    config["resume"] = args.resume
    config["task"] = args.task
    for name in LAUNCHER_PATHS:
        if getattr(args, name) is not None:
            config[name] = str(getattr(args, name))  # recorded in config.yaml for later stages
    return resolve_config(config)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build task data and model, run the Trainer; 0 on success, 1 on bad input."""
    args, overrides = get_parser().parse_known_args(argv)
    setup_logging()
    try:
        config = build_config(args, overrides)
        if args.print_config:
            sys.stdout.write(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
            return 0
        if not args.exp_dir:
            raise ConfigError("--exp_dir is required")
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if int(config["ngpu"]) > 1 and world_size == 1:
            logger.warning("ngpu=%d but one process: training on 1 GPU; launch "
                           "`torchrun --nproc_per_node %d` for DDP", config["ngpu"], config["ngpu"])
        # Same seed on every rank here, so every rank builds the same initial weights.
        set_seed(int(config["seed"]))
        model, train_set, valid_set, *collates = SETUPS[args.task](args, config)
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("model %s: %.2f M parameters (%.2f M trainable)",
                    type(model).__name__, n_params / 1e6, n_train / 1e6)
        trainer = Trainer(model, config, args.exp_dir, train_set, valid_set, *collates)
        trainer.run()
    except (ConfigError, NonFiniteLossError) as e:
        logger.error("%s", e)
        return 1
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
