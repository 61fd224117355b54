r"""Decode a data dir with a trained speech LLM: batched ``generate`` (greedy, beam or sampling).

    python -m speechllm.bin.sllm_inference --exp_dir exp/sllm_x --checkpoint exp/sllm_x/valid.acc.ave.pt \
        --data_dir dump/fbank/test --output_dir exp/sllm_x/decode/test --job 1 --nj 2 \
        --config conf/decode_sllm.yaml [--num_beams 4 ...]

The model is rebuilt from ``--exp_dir/config.yaml`` (its LLM from the hub id or directory named
there) and the trainable weights of ``--checkpoint`` are loaded on top; an exported directory
(``sllm_export``) is read with ``--model_dir`` instead. The data dir is read as the model was
trained (``input``: fbank/dumped matrices of ``feats.scp``, or audio of ``wav.scp``).

Each utterance gets the prompt ``prompt`` (a wording with ``{text}`` where the audio goes; default:
the first training wording of the model's config). New tokens are bounded by the audio length:
``max_new_tokens = max_new_tokens_base + max_new_tokens_per_second * seconds``. Job ``J`` of ``N``
decodes the J-th share of the utterances (longest first, in batches) and writes
  ``output_dir/text.J``      ``utt_id hypothesis`` (newlines folded to spaces)
  ``output_dir/gen_info.J``  ``utt_id num_new_tokens stopped`` (stopped 0: cut at the bound)
and logs the real-time factor and the number of empty and cut outputs.

With ``--prompts_jsonl FILE`` (an MTBI targets file, see :mod:`speechllm.mtbi.evaluate`) one
example is decoded per line instead: the audio of the line's ``utt_id`` with the line's own
``prompt`` wording, written under the line's ``id`` in ``text.J`` and ``gen_info.J``. Job ``J``
takes the lines of the J-th share of the file's utterances (all lines of an utterance in one job);
a batch encodes each of its utterances once. ``max_new_tokens_min`` raises the bound per task
(``{continue: 48}``, or ``continue=48,count_words=4`` on the command line; a key is a ``task`` or
an ``answer_task``): an answer such as the next verse need not be as short as the audio.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from speechllm.bin import exit_on_user_error
from speechllm.bin.asr_inference import DecodeInputs, audio_inputs, feature_inputs
from speechllm.data.datadir import DataDirError
from speechllm.data.dataset import pad_sequences
from speechllm.data.fix_datadir import share_of
from speechllm.llm.adapters import scale_lora
from speechllm.llm.prompting import render_prompt_pieces
from speechllm.mtbi.targets import read_targets
from speechllm.tasks import sllm
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError, atomic_write_text, load_yaml, save_config
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)

DECODE_DEFAULTS: dict[str, Any] = {
    "mode": "greedy",               # greedy | beam | sample
    "num_beams": 4,                 # beam mode
    "temperature": 1.0,             # sample mode
    "top_p": 1.0,                   # sample mode
    "repetition_penalty": 1.0,      # > 1 discourages repeating tokens (guards against loops)
    "no_repeat_ngram_size": 0,      # > 0 forbids repeating any n-gram of this size
    "max_new_tokens_base": 8,
    "max_new_tokens_per_second": 8.0,
    "max_new_tokens_min": None,     # --prompts_jsonl: per-task lower bounds {task: N} ("task=N,task=N")
    "prompt": None,                 # wording with {text}; None: the config's first training wording
    "system_prompt": None,          # None: the training config's
    "lora_scale": 1.0,              # LoRA updates x this (llm.adapters.scale_lora); needs --exp_dir
    "projector_mix": None,          # ctc_text projector: soft | hard (None: as trained)
    "batch_size": 8,
    "seed": 0,                      # sample mode
    "device": "cpu",
}
MODES = ("greedy", "beam", "sample")


def get_parser() -> argparse.ArgumentParser:
    """Command-line options; decoding options default to None so that --config can fill them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--exp_dir", type=Path, help="training experiment dir (its config.yaml)")
    g.add_argument("--checkpoint", type=Path, help="trainable weights (Trainer checkpoint)")
    g.add_argument("--model_dir", type=Path, help="a directory written by sllm_export, instead of the two above")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", type=Path, help="data dir (feats.scp or wav.scp, as the model was trained)")
    g.add_argument("--prompts_jsonl", type=Path,
                   help="decode one example per line of this MTBI targets file (its prompt, its utt_id's "
                        "audio), written under the line's id, instead of one prompt per utterance")
    g.add_argument("--output_dir", type=Path, help="writes text.JOB and gen_info.JOB here")
    g.add_argument("--job", type=int, default=1, help="1-based job index")
    g.add_argument("--nj", type=int, default=1, help="number of jobs")
    g = p.add_argument_group("decoding (defaults: --print_config)")
    g.add_argument("--config", type=Path, help="YAML with decoding options")
    for key, default in DECODE_DEFAULTS.items():
        kind = type(default) if default is not None else str
        g.add_argument(f"--{key}", type=kind, help=f"(default {default})")
    p.add_argument("--print_config", action="store_true", help="print the resolved decoding options and exit")
    p.add_argument("--log_level", default="INFO")
    return p


def resolve_options(args: argparse.Namespace) -> dict:
    """Decoding options: defaults <- --config YAML <- flags, checked."""
    opts = dict(DECODE_DEFAULTS)
    if args.config is not None:
        cfg = load_yaml(args.config)
        unknown = sorted(set(cfg) - set(DECODE_DEFAULTS))
        if unknown:
            raise ConfigError(f"{args.config}: unknown decoding option(s) {unknown}; allowed: {sorted(DECODE_DEFAULTS)}")
        opts.update(cfg)
    for key in DECODE_DEFAULTS:
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if opts["mode"] not in MODES:
        raise ConfigError(f"mode: unknown choice {opts['mode']!r}; choose one of {list(MODES)}")
    if opts["prompt"] is not None and opts["prompt"].count(sllm.PLACEHOLDER) != 1:
        raise ConfigError(f"prompt must hold {sllm.PLACEHOLDER} once (where the audio goes): {opts['prompt']!r}")
    opts["max_new_tokens_min"] = parse_task_bounds(opts["max_new_tokens_min"])
    return opts


def parse_task_bounds(value: object) -> dict[str, int] | None:
    """``max_new_tokens_min``: a ``{task: N}`` mapping (YAML) or ``"task=N,task=N"`` (command line)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"max_new_tokens_min: expected task=N[,task=N...], got {value!r}")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"max_new_tokens_min: expected a mapping task -> tokens, got {value!r}")
    try:
        bounds = {str(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"max_new_tokens_min: token counts must be integers, got {value!r}") from None
    if any(n < 0 for n in bounds.values()):
        raise ConfigError(f"max_new_tokens_min: negative token count in {value!r}")
    return bounds


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The speech LLM with its trained weights, and its training config."""
    if args.model_dir is not None:
        from speechllm.models.speech_llm import SpeechLLM

        model = SpeechLLM.from_exported(args.model_dir)
        return model.eval(), load_yaml(args.model_dir / "config.yaml")
    if args.exp_dir is None or args.checkpoint is None:
        raise ConfigError("no model: give --exp_dir and --checkpoint, or --model_dir")
    config = load_yaml(args.exp_dir / "config.yaml")
    model = sllm.build_model(config)
    state = load_model_state_dict(args.checkpoint)
    try:
        model.load_checkpoint_state_dict(state)
    except ValueError as e:
        raise ConfigError(f"{args.checkpoint}: {e}") from None
    log.info("loaded %s (%d tensors) on top of %s", args.checkpoint, len(state), config.get("llm") or "llm_config")
    return model.eval(), config


def generation_kwargs(opts: dict) -> dict:
    """Keyword arguments of ``SpeechLLM.generate`` for the decoding mode."""
    kw = {"repetition_penalty": float(opts["repetition_penalty"]),
          "no_repeat_ngram_size": int(opts["no_repeat_ngram_size"])}
    if opts["mode"] == "beam":
        kw["num_beams"] = int(opts["num_beams"])
    elif opts["mode"] == "sample":
        kw.update(do_sample=True, temperature=float(opts["temperature"]), top_p=float(opts["top_p"]))
    return kw


@dataclass(frozen=True)
class Example:
    """One sequence to decode: the output ``key``, the audio of ``utt``, the ``wording`` (with
    ``{text}``), and the tasks that may raise its length bound."""

    key: str
    utt: str
    wording: str
    tasks: tuple[str, ...] = ()


def load_inputs(args: argparse.Namespace, config: dict, nj: int, job: int) -> DecodeInputs:
    """The ``job``-th of ``nj`` shares of the data dir, read as the model was trained."""
    if sllm.resolve_input(config) == "raw":
        rate = int((config.get("input_conf") or {}).get("sample_rate", 16000))
        return audio_inputs(args.data_dir, nj, job, rate)
    return feature_inputs(args.data_dir, nj, job)


def jsonl_examples(path: Path, inputs: DecodeInputs, data_dir: Path, nj: int, job: int) -> list[Example]:
    """This job's examples of a targets JSONL: the lines of the ``job``-th share of its utterances."""
    lines = read_targets(path, required=("id", "utt_id", "prompt"), allow_empty=False)
    unknown = sorted({str(x["utt_id"]) for x in lines} - set(inputs.lengths))
    if unknown:
        raise DataDirError(path, None, f"{len(unknown)} of its utterances are not in {data_dir}, "
                                       f"e.g. '{unknown[0]}'")
    utts = set(share_of(sorted({str(x["utt_id"]) for x in lines}), nj, job))
    mine = sorted((x for x in lines if x["utt_id"] in utts), key=lambda x: str(x["utt_id"]))
    return [Example(x["id"], str(x["utt_id"]), x["prompt"],
                    tuple(str(x[k]) for k in ("task", "answer_task") if x.get(k))) for x in mine]


def length_bound(opts: dict, seconds: float, tasks: tuple[str, ...]) -> int:
    """``base + per_second * seconds``, raised to the first ``max_new_tokens_min`` entry of ``tasks``."""
    bound = int(opts["max_new_tokens_base"] + opts["max_new_tokens_per_second"] * seconds)
    mins = opts.get("max_new_tokens_min") or {}
    floor = next((mins[t] for t in tasks if t in mins), 0)
    return max(bound, floor)


def generate_examples(model: torch.nn.Module, inputs: DecodeInputs, examples: list[Example], opts: dict,
                      system: str | None, desc: str) -> tuple[dict[str, str], dict[str, tuple[int, bool]]]:
    """Decode ``examples`` longest audio first in batches of ``batch_size`` (each utterance of a
    batch encoded once); returns ``{key: text}`` and ``{key: (new tokens, stopped)}``."""
    pieces: dict[str, Any] = {}
    order = sorted(examples, key=lambda e: -inputs.lengths[e.utt])
    kw = generation_kwargs(opts)
    texts: dict[str, str] = {}
    info: dict[str, tuple[int, bool]] = {}
    size = int(opts["batch_size"])
    with torch.no_grad(), tqdm(total=len(order), desc=desc, unit="example") as bar:
        for i in range(0, len(order), size):
            chunk = order[i : i + size]
            utts = list(dict.fromkeys(e.utt for e in chunk))
            slot = {u: n for n, u in enumerate(utts)}
            x, x_lens = pad_sequences([torch.from_numpy(np.array(inputs.load(u), dtype=np.float32)) for u in utts])
            for e in chunk:
                if e.wording not in pieces:
                    pieces[e.wording] = render_prompt_pieces(model.tokenizer, sllm.user_turn(e.wording), system)
            bounds = [length_bound(opts, inputs.lengths[e.utt] * inputs.seconds_per_unit, e.tasks) for e in chunk]
            batch = {"utt_ids": utts, "feats": x.to(opts["device"]), "feats_lens": x_lens.to(opts["device"]),
                     "prompts": [pieces[e.wording] for e in chunk],
                     "audio_spans": [[(slot[e.utt], 0, -1)] for e in chunk]}
            outs = model.generate(batch, max_new_tokens=bounds, **kw)
            for e, ids, bound in zip(chunk, outs, bounds):
                texts[e.key] = " ".join(model.tokenizer.decode(ids, skip_special_tokens=True).split())
                info[e.key] = (len(ids), len(ids) < bound)
            bar.update(len(chunk))
    return texts, info


def decode(args: argparse.Namespace, opts: dict) -> None:
    """Decode this job's share of the data dir (or of ``--prompts_jsonl``) and write ``text.JOB`` /
    ``gen_info.JOB``."""
    model, config = load_model(args)
    if opts["lora_scale"] != 1.0:
        n = scale_lora(model, opts["lora_scale"])
        log.info("LoRA updates scaled by %g in %d layers", opts["lora_scale"], n)
    if opts["projector_mix"] is not None:
        if not hasattr(model.projector, "mix"):
            raise ConfigError(f"projector_mix: the {type(model.projector).__name__} projector has no mix "
                              "(only ctc_text has)")
        model.projector.mix = opts["projector_mix"]
        log.info("projector mix: %s", opts["projector_mix"])
    model.to(opts["device"])
    system = opts["system_prompt"] if opts["system_prompt"] is not None else config.get("system_prompt")
    if args.prompts_jsonl is not None:
        inputs = load_inputs(args, config, 1, 1)
        examples = jsonl_examples(args.prompts_jsonl, inputs, args.data_dir, args.nj, args.job)
        log.info("%s: %d examples of %d utterances in job %d/%d", args.prompts_jsonl, len(examples),
                 len({e.utt for e in examples}), args.job, args.nj)
        if opts["prompt"] is not None:
            log.warning("prompt is not used: every example has its own (--prompts_jsonl)")
    else:
        inputs = load_inputs(args, config, args.nj, args.job)
        wording = opts["prompt"] or sllm.prompt_wordings(config)[0]
        log.info("prompt: %r", wording)
        examples = [Example(u, u, wording) for u in inputs.utt_ids]
        if opts["max_new_tokens_min"]:
            log.warning("max_new_tokens_min is not used: it applies to --prompts_jsonl examples")
    torch.manual_seed(int(opts["seed"]))
    start = time.perf_counter()
    texts, info = generate_examples(model, inputs, examples, opts, system, f"decode job {args.job}/{args.nj}")
    elapsed = time.perf_counter() - start
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / f"text.{args.job}",
                      "".join(f"{k} {texts[k]}".rstrip() + "\n" for k in sorted(texts)))
    atomic_write_text(args.output_dir / f"gen_info.{args.job}",
                      "".join(f"{k} {n} {int(stopped)}\n" for k, (n, stopped) in sorted(info.items())))
    audio_s = sum(inputs.lengths[u] for u in {e.utt for e in examples}) * inputs.seconds_per_unit
    n_tokens = sum(n for n, _ in info.values())
    log.info("decoded %d examples (%.1f s of audio, %d new tokens) in %.1f s on %s: RTF %.4f, %.1f tokens/s",
             len(texts), audio_s, n_tokens, elapsed, opts["device"], elapsed / max(audio_s, 1e-9),
             n_tokens / max(elapsed, 1e-9))
    empty = sum(1 for t in texts.values() if not t)
    cut = sum(1 for _, stopped in info.values() if not stopped)
    if empty or cut:
        log.warning("%d empty outputs, %d outputs cut at the length bound (of %d)", empty, cut, len(texts))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, decode this job's share; 1 with a one-line message on bad input."""
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    opts = resolve_options(args)
    if args.print_config:
        print(yaml.safe_dump(opts, sort_keys=False), end="")
        return 0
    missing = [f"--{n}" for n in ("data_dir", "output_dir") if getattr(args, n) is None]
    if missing:
        raise ConfigError("missing " + ", ".join(missing))
    if not 1 <= args.job <= args.nj:
        raise ConfigError(f"--job {args.job} is not in 1..{args.nj}")
    sources = {k: str(getattr(args, k)) for k in ("exp_dir", "checkpoint", "model_dir", "config", "data_dir",
                                                  "prompts_jsonl")
               if getattr(args, k) is not None}
    save_config({**opts, **sources}, args.output_dir / "decode_config.yaml")
    decode(args, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
