"""`make bench`: speed and memory of the mini recipe's ASR model on its own data.

Measures, on egs/mini_synth/asr1 (its conf/train.yaml model, its dumped features and token list):
  * training throughput: seconds of input audio per wall-clock second over real batches
    (data loading, forward, backward, optimizer step), and peak memory, in fp32 and with each
    autocast dtype of --amp_dtypes the device supports (bf16 on the CPU, as the Trainer does),
    each with native and packed dropout (the Trainer's dropout_impl; auto = packed on the CPU);
  * decoding real-time factor (decode seconds / audio seconds) for greedy CTC and for the batched
    joint CTC/attention beam search at several batch sizes, and peak memory.
Results go to bench/results/<name>.json and .md with a description of the machine.

The recipe's data stages (1-5) are run first if their outputs are missing. Decoding uses the
recipe's trained model when stage 6 has finished; otherwise a randomly initialized model, which
the report says (an untrained decoder runs to the length limit, so its beam timings are pessimistic).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from speechllm.bin.asr_inference import decode_utterances
from speechllm.data.datadir import read_feats_scp, read_utt2num_frames
from speechllm.data.dataset import ASRDataset, collate_asr
from speechllm.data.sampler import BucketBatchSampler
from speechllm.nets.dropout import DROPOUT_IMPLS, apply_dropout_impl
from speechllm.tasks.asr import build_model
from speechllm.text.tokenizer import Tokenizer
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.train.trainer import AMP_DTYPES, amp_enabled
from speechllm.utils.config import atomic_write_text, load_yaml
from speechllm.utils.git import git_commit
from speechllm.utils.logging_utils import setup_logging
from speechllm.utils.machine import cpu_model

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
FRAME_SHIFT_S = 0.01


def machine_description(device: str) -> dict:
    """CPU model, cores, memory, accelerator and library versions: what a timing depends on."""
    cpu = cpu_model()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    desc = {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "device": device, "commit": git_commit(ROOT), "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        desc["gpu"] = torch.cuda.get_device_name(device)
    return desc


def peak_memory_mb(device: str) -> float:
    """Peak resident memory of this process (CPU) or peak allocated device memory (CUDA), in MB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def ensure_recipe_data(recipe: Path) -> None:
    """Run the recipe's stages 1-5 (data, features, tokenizer) when their outputs are missing."""
    if (recipe / "dump/fbank/train/feats.scp").is_file() and list((recipe / "data/token_list").glob("*/tokens.txt")):
        return
    log.info("recipe data missing: running %s/run.sh --stop_stage 5", recipe)
    subprocess.run(["./run.sh", "--stop_stage", "5"], cwd=recipe, check=True)


def load_recipe_model(recipe: Path, device: str) -> tuple[dict, Tokenizer, torch.nn.Module]:
    """The recipe's ``conf/train.yaml``, its tokenizer and a new model of that config (seed 0) with
    the training set's CMVN stats, on ``device``."""
    config = load_yaml(recipe / "conf/train.yaml")
    token_list = sorted((recipe / "data/token_list").glob("*/tokens.txt"))[0]
    tokenizer = Tokenizer(token_list.parent / "tokenizer.model", token_list)
    torch.manual_seed(0)
    model = build_model(config, tokenizer.vocab_size, cmvn_stats_path=recipe / "dump/fbank/train/cmvn.json")
    return config, tokenizer, model.to(device)


def train_steps(model, config: dict, dataset: ASRDataset, steps: int, device: str, amp_dtype: str = "none",
                grad_clip: float | None = None) -> Iterator[float]:
    """Run ``steps`` training steps of ``model`` (Adam at the config's lr) over length-bucketed,
    shuffled batches of ``dataset`` (the config's ``batch_bins`` and ``num_workers``, starting over
    when they run out), under autocast to ``amp_dtype`` as the Trainer would; yield each step's
    seconds of input audio once the step is done."""
    dtype = AMP_DTYPES[amp_dtype]
    use_amp = amp_enabled(dtype, torch.device(device))
    sampler = BucketBatchSampler(dataset.lengths, batch_bins=int(config["batch_bins"]), shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_asr, num_workers=int(config.get("num_workers", 0)))
    optim = torch.optim.Adam(model.parameters(), lr=float(config["optim_conf"]["lr"]))
    model.train()
    it = iter(loader)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=use_amp):
            loss, _ = model(batch)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)
        yield float(batch["feats_lens"].sum()) * FRAME_SHIFT_S


def bench_training(model, config: dict, dataset: ASRDataset, steps: int, device: str, amp_dtype: str = "none",
                   dropout_impl: str = "native") -> dict:
    """Throughput of real training steps (:func:`train_steps`) over the recipe's train set, under
    autocast to ``amp_dtype`` (a key of the Trainer's ``AMP_DTYPES``) as the Trainer would, with
    the ``nn.Dropout`` layers of a copy of ``model`` made packed when the Trainer's
    ``dropout_impl`` rule says so on ``device``."""
    model = copy.deepcopy(model)
    apply_dropout_impl(model, dropout_impl, torch.device(device))
    warmup, audio_s, timed_steps = 2, 0.0, 0
    start = time.perf_counter()
    for step, step_audio_s in enumerate(train_steps(model, config, dataset, steps + warmup, device, amp_dtype), 1):
        if step == warmup:  # exclude one-time start-up (worker spawn, allocator growth)
            start = time.perf_counter()
        elif step > warmup:
            audio_s += step_audio_s
            timed_steps += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {"amp_dtype": amp_dtype, "dropout_impl": dropout_impl, "steps": timed_steps, "batch_bins": int(config["batch_bins"]), "audio_s": round(audio_s, 1),
            "wall_s": round(wall, 2), "audio_s_per_wall_s": round(audio_s / wall, 1),
            "peak_memory_mb": round(peak_memory_mb(device))}


def bench_decoding(model, feats: dict, utts: list[str], lengths: dict, mode: str, batch_size: int,
                   beam_size: int, ctc_weight: float, device: str) -> dict:
    """RTF of decoding ``utts`` (longest first, as asr_inference does) in batches of ``batch_size``."""
    opts = {"mode": mode, "beam_size": beam_size, "ctc_weight": ctc_weight, "length_bonus": 0.0,
            "maxlen_ratio": 0.5, "nbest": 1, "batch_size": batch_size, "device": device}
    order = sorted(utts, key=lambda u: -lengths[u])
    model.eval()
    start = time.perf_counter()
    decode_utterances(model, feats, order, opts, f"{mode} bs{batch_size}")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    audio_s = sum(lengths[u] for u in utts) * FRAME_SHIFT_S
    return {"mode": mode, "batch_size": batch_size, "beam_size": beam_size if mode == "beam" else None,
            "utts": len(utts), "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "rtf": round(wall / audio_s, 4),
            "peak_memory_mb": round(peak_memory_mb(device))}


def to_markdown(report: dict) -> str:
    """A human-readable copy of the report."""
    m = report["machine"]
    lines = [f"# ASR benchmark: {report['recipe']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, device {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else "") + f", torch {m['torch']} ({m['torch_threads']} threads)",
             f"Commit {m['commit']}, {m['date']}. Command: `{report['command']}`", "",
             f"Model: {report['model']}", "",
             "## Training", "",
             "| autocast | dropout | steps | batch_bins | audio s | wall s | audio s / wall s | peak memory MB |",
             "|---|---|---|---|---|---|---|---|"]
    for t in report["training"]:
        lines.append(f"| {t['amp_dtype']} | {t['dropout_impl']} | {t['steps']} | {t['batch_bins']} | {t['audio_s']} | {t['wall_s']} "
                     f"| {t['audio_s_per_wall_s']} | {t['peak_memory_mb']} |")
    lines += ["", "## Decoding", "",
             "| mode | beam | batch size | utts | audio s | wall s | RTF | peak memory MB |", "|---|---|---|---|---|---|---|---|"]
    for d in report["decoding"]:
        lines.append(f"| {d['mode']} | {d['beam_size'] or '-'} | {d['batch_size']} | {d['utts']} | {d['audio_s']} "
                     f"| {d['wall_s']} | {d['rtf']} | {d['peak_memory_mb']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=ROOT / "egs/mini_synth/asr1")
    p.add_argument("--exp", default="exp/asr_train_bpe200", help="experiment dir inside the recipe")
    p.add_argument("--train_steps", type=int, default=20)
    p.add_argument("--amp_dtypes", nargs="+", default=["none", "bf16", "fp16"], choices=sorted(AMP_DTYPES),
                   help="training autocast dtypes to time; those the device cannot autocast to are left out")
    p.add_argument("--dropout_impls", nargs="+", default=["native", "packed"], choices=list(DROPOUT_IMPLS),
                   help="Trainer dropout_impl settings to time with each autocast dtype")
    p.add_argument("--decode_utts", type=int, default=48, help="test utterances decoded per setting")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--beam_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--name", default=None, help="output name (default: asr_mini_synth_<device>)")
    args = p.parse_args(argv)
    setup_logging()
    recipe = args.recipe.resolve()
    ensure_recipe_data(recipe)

    config, tokenizer, model = load_recipe_model(recipe, args.device)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    n_params = sum(q.numel() for q in model.parameters()) / 1e6

    cwd = os.getcwd()
    os.chdir(recipe)  # feats.scp holds paths relative to the recipe
    try:
        train_set = ASRDataset(recipe / "dump/fbank/train", tokenizer)
        training = []
        for amp_dtype in args.amp_dtypes:
            if amp_dtype != "none" and not amp_enabled(AMP_DTYPES[amp_dtype], torch.device(args.device)):
                log.info("training with %s autocast: not on %s, left out", amp_dtype, args.device)
                continue
            for impl in args.dropout_impls:
                log.info("training: %d steps, autocast %s, dropout %s", args.train_steps, amp_dtype, impl)
                model.load_state_dict(initial_state)  # every setting starts from the same weights
                torch.manual_seed(0)  # and the same batches
                training.append(bench_training(model, config, train_set, args.train_steps, args.device, amp_dtype, impl))

        ckpt = recipe / args.exp / "valid.acc.ave.pt"
        if ckpt.exists():
            model.load_state_dict(load_model_state_dict(ckpt))
            model_desc = f"{args.exp}/valid.acc.ave.pt (trained, {n_params:.2f} M parameters)"
        else:
            model_desc = f"conf/train.yaml, randomly initialized ({n_params:.2f} M parameters): stage 6 has not run"
        test = recipe / "dump/fbank/test"
        feats = read_feats_scp(test / "feats.scp")
        lengths = read_utt2num_frames(test / "utt2num_frames")
        utts = sorted(feats)[: args.decode_utts]
        decoding = []
        with torch.no_grad():
            for bs in args.batch_sizes:
                decoding.append(bench_decoding(model, feats, utts, lengths, "greedy_ctc", bs, 1, 1.0, args.device))
            for bs in args.batch_sizes:
                decoding.append(bench_decoding(model, feats, utts, lengths, "beam", bs, args.beam_size, 0.3, args.device))
    finally:
        os.chdir(cwd)

    report = {"recipe": str(recipe.relative_to(ROOT)), "model": model_desc, "machine": machine_description(args.device),
              "command": "make bench  # python bench/run_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "training": training, "decoding": decoding}
    name = args.name or f"asr_mini_synth_{args.device.split(':')[0]}"
    out = ROOT / "bench/results"
    atomic_write_text(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", to_markdown(report))
    print(to_markdown(report))
    log.info("wrote %s/%s.{json,md}", out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
