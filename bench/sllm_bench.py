"""Speech-LLM cost at the mini size: training step time and peak memory per projector type, and
tokens/s of batched greedy decoding.

The model is the one of egs/mini_synth/sllm1/conf/train_sllm.yaml (Conformer encoder, frozen) with
the mini LLM of conf/lm_pretrain.yaml (a ~4 M-parameter Llama), both randomly initialized (cost
does not depend on the weights), LoRA as configured. Inputs are synthetic fbank utterances with
12-token responses. Each projector runs in its own process, so its peak memory (process RSS on
CPU, allocated memory on CUDA) is its own. Results go to bench/results/sllm_<device>.{json,md}.

    python bench/sllm_bench.py                   # cpu, and cuda when available
    python bench/sllm_bench.py --devices cpu --threads 2 --batch 16 --seconds 4
    python bench/sllm_bench.py --jobs 2 --projectors ctc_text   # N trainings at once, pinned

``--jobs N`` times training only, on the CPU: one process on every core (as many threads), then N
processes at once, each pinned to its share of the cores with one thread per core (as the MTBI
template's ``--train_jobs N`` trains systems), and compares their total throughput; results go to
bench/results/sllm_jobs_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run_bench import machine_description, peak_memory_mb  # noqa: E402
from speechllm.utils.cores import core_shares  # noqa: E402
from speechllm.utils.config import atomic_write_text, load_yaml  # noqa: E402
from speechllm.utils.logging_utils import setup_logging  # noqa: E402

log = logging.getLogger("bench")
RECIPE = ROOT / "egs/mini_synth/sllm1"
PROJECTORS = {
    "linear": {"downsample": 2, "hidden_size": 512},
    "conv1d": {"downsample": 2, "hidden_size": 512},
    "qformer": {"window": 4, "num_queries": 2, "num_layers": 2, "d_model": 256, "num_heads": 4},
    "ctc_text": {"hidden_size": 512, "activation": "relu"},
}
# Projectors timed as the MTBI recipe trains them (egs/mini_synth/mtbi1/conf/systems.yaml, *_ctc_text):
# the LLM frozen (no LoRA), only the projector learning, with its CTC loss on the transcript.
FROZEN_LLM = {"ctc_text": {"lora": None, "freeze": ["encoder.*", "llm.*"]}}
SENTENCES = ["and god said let there be light and there was light", "blessed are the meek",
             "in the beginning was the word", "the lord is my shepherd i shall not want"] * 8


def build(projector: str, tmp: Path) -> torch.nn.Module:
    """The mini speech LLM with ``projector``; a mini tokenizer trained on a few sentences."""
    from speechllm.llm.mini_lm import train_tokenizer
    from speechllm.tasks.sllm import build_model

    lm_conf = load_yaml(RECIPE / "conf/lm_pretrain.yaml")["model_conf"]
    tok = train_tokenizer(SENTENCES, vocab_size=300, min_frequency=1)
    tok.save_pretrained(str(tmp / "tok"))
    config = copy.deepcopy(load_yaml(RECIPE / "conf/train_sllm.yaml"))
    config.update(normalize=None, encoder_init=None, llm=None, tokenizer=str(tmp / "tok"),
                  projector=projector, projector_conf=PROJECTORS[projector],
                  llm_config={"model_type": "llama", "vocab_size": 3000, **lm_conf,
                              "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                              "pad_token_id": tok.pad_token_id})
    config.update(FROZEN_LLM.get(projector, {}))
    return build_model(config)


def make_batch(model: torch.nn.Module, n: int, seconds: float, device: str, targets: bool) -> dict:
    from speechllm.llm.prompting import render_prompt_pieces, response_ids, transcript_ids

    frames = int(seconds * 100)
    user = "Transcribe the audio: <|audio|>"
    batch = {"utt_ids": [f"u{i}" for i in range(n)], "feats": torch.randn(n, frames, 80, device=device),
             "feats_lens": torch.full((n,), frames, device=device),
             "prompts": [render_prompt_pieces(model.tokenizer, user)] * n,
             "audio_spans": [[(i, 0, -1)] for i in range(n)]}
    if targets:
        batch["response_ids"] = [response_ids(model.tokenizer, user, SENTENCES[i % len(SENTENCES)])[:12]
                                 for i in range(n)]
        # read only by a projector with a CTC loss (ctc_text)
        batch["transcript_ids"] = [transcript_ids(model.tokenizer, SENTENCES[i % len(SENTENCES)]) for i in range(n)]
    return batch


def bench_projector(projector: str, device: str, threads: int | None, batch: int, seconds: float,
                    repeats: int, decode_batches: list[int], new_tokens: int, queue: mp.Queue,
                    cores: list[int] | None = None) -> None:
    """Child process: train steps and decoding of one projector type; puts a result dict.
    ``cores``: pin the process to these CPU cores."""
    if cores:
        os.sched_setaffinity(0, cores)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = build(projector, Path(tmp)).to(device)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = make_batch(model, batch, seconds, device, targets=True)
    model.train()
    steps = []
    for i in range(repeats + 1):  # the first step warms up (allocator, lazy init)
        sync(device)
        start = time.perf_counter()
        loss, _ = model(data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i:
            steps.append(time.perf_counter() - start)
    result = {"projector": projector, "projector_conf": PROJECTORS[projector], "params_m": round(params / 1e6, 2),
              "trainable_m": round(trainable / 1e6, 3), "batch": batch, "utt_seconds": seconds,
              "step_s": round(statistics.median(steps), 4),
              "audio_s_per_s": round(batch * seconds / statistics.median(steps), 1),
              "train_peak_memory_mb": round(peak_memory_mb(device))}
    model.eval()
    decoding = []
    with torch.no_grad():
        for b in decode_batches:
            data = make_batch(model, b, seconds, device, targets=False)
            model.generate(data, max_new_tokens=2)  # warm-up
            sync(device)
            start = time.perf_counter()
            outs = model.generate(data, max_new_tokens=new_tokens)
            sync(device)
            wall = time.perf_counter() - start
            tokens = sum(len(o) for o in outs)
            decoding.append({"batch": b, "new_tokens": tokens, "wall_s": round(wall, 3),
                             "tokens_per_s": round(tokens / wall, 1), "rtf": round(wall / (b * seconds), 4)})
    result["decoding"] = decoding
    queue.put(result)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def to_markdown(report: dict) -> str:
    m = report["machine"]
    a = report["args"]
    lines = [f"# Speech LLM at the mini size ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, device {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else "") + f", torch {m['torch']} ({m['torch_threads']} threads)",
             f"Commit {m['commit']}, {m['date']}. Command: `{report['command']}`",
             f"Load average (1 min) when written: {report['load_average_1m']}.", "",
             "Model: egs/mini_synth/sllm1/conf/train_sllm.yaml (Conformer encoder frozen, LoRA on the "
             "mini Llama of conf/lm_pretrain.yaml), random weights; "
             f"{', '.join(sorted(FROZEN_LLM))} as the MTBI recipe trains it: the LLM frozen too, no LoRA, "
             "plus the projector's CTC loss on the transcript. "
             f"Training: batches of {a['batch']} utterances of {a['seconds']} s with 12-token responses, "
             f"median of {a['repeats']} steps (forward, backward, AdamW). Peak memory: process RSS on CPU, "
             "allocated memory on CUDA, one process per projector.", "",
             "| projector | params M | trained M | step s | audio s per s | peak memory MB |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['projector']} | {r['params_m']} | {r['trainable_m']} | {r['step_s']} "
                     f"| {r['audio_s_per_s']} | {r['train_peak_memory_mb']} |")
    lines += ["", f"Batched greedy decoding (`generate`, up to {a['new_tokens']} new tokens per utterance; "
              "a random model may stop early, the count is of tokens actually generated):", "",
              "| projector | batch | new tokens | wall s | tokens/s | RTF |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        for d in r["decoding"]:
            lines.append(f"| {r['projector']} | {d['batch']} | {d['new_tokens']} | {d['wall_s']} "
                         f"| {d['tokens_per_s']} | {d['rtf']} |")
    return "\n".join(lines) + "\n"


def bench_jobs(projector: str, jobs: int, batch: int, seconds: float, repeats: int) -> dict:
    """One training process on every core, then ``jobs`` at once on their shares of the cores."""
    ctx = mp.get_context("spawn")
    cores = sorted(os.sched_getaffinity(0))
    shares = core_shares(jobs, cores)
    if len(shares) < jobs:
        raise SystemExit(f"--jobs {jobs}: more jobs than the {len(cores)} cores")
    layouts = []
    for name, groups in (("one process", [cores]), (f"{jobs} processes", shares)):
        queue = ctx.Queue()
        procs = [ctx.Process(target=bench_projector, args=(projector, "cpu", len(g), batch, seconds, repeats, [],
                                                           0, queue, g)) for g in groups]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        steps = [r["step_s"] for r in results]
        layouts.append({"layout": name, "processes": len(groups), "threads_each": [len(g) for g in groups],
                        "cores": [",".join(map(str, g)) for g in groups], "step_s": steps,
                        "utterances_per_s": round(sum(batch / s for s in steps), 2)})
    return {"projector": projector, "batch": batch, "utt_seconds": seconds, "layouts": layouts,
            "speedup": round(layouts[1]["utterances_per_s"] / layouts[0]["utterances_per_s"], 3)}


def jobs_markdown(report: dict) -> str:
    m, a = report["machine"], report["args"]
    lines = [f"# Speech-LLM training, {a['jobs']} at once (cpu)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, torch {m['torch']}",
             f"Commit {m['commit']}, {m['date']}. Command: `{report['command']}`",
             f"Load average (1 min) when written: {report['load_average_1m']}.", "",
             "The mini speech LLM as in sllm_cpu.md, training only (median step of "
             f"{a['repeats']}, batches of {a['batch']} utterances of {a['seconds']} s): one process with a "
             f"thread per core, then {a['jobs']} processes at once, each pinned to its share of the cores "
             "with a thread per core (the MTBI template's `--train_jobs`).", "",
             "| projector | layout | threads | cores | step s | utterances per s (all processes) | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for i, lay in enumerate(r["layouts"]):
            lines.append(f"| {r['projector']} | {lay['layout']} | {'/'.join(map(str, lay['threads_each']))} "
                         f"| {' / '.join(lay['cores'])} | {' / '.join(f'{s:.3f}' for s in lay['step_s'])} "
                         f"| {lay['utterances_per_s']} | {r['speedup'] if i else 1.0}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--projectors", nargs="+", default=list(PROJECTORS), choices=list(PROJECTORS))
    p.add_argument("--batch", type=int, default=16, help="training batch (utterances)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    p.add_argument("--repeats", type=int, default=5, help="timed training steps (median reported)")
    p.add_argument("--decode_batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out_dir", type=Path, default=ROOT / "bench/results")
    p.add_argument("--jobs", type=int, default=0, help="N > 1: time N pinned trainings at once against one (cpu)")
    args = p.parse_args(argv)
    setup_logging()
    command = "python bench/sllm_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.jobs > 1:
        results = [bench_jobs(projector, args.jobs, args.batch, args.seconds, args.repeats)
                   for projector in args.projectors]
        report = {"machine": machine_description("cpu"), "args": vars(args) | {"out_dir": None},
                  "load_average_1m": round(os.getloadavg()[0], 2), "command": command, "results": results}
        atomic_write_text(args.out_dir / "sllm_jobs_cpu.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out_dir / "sllm_jobs_cpu.md", jobs_markdown(report))
        print(jobs_markdown(report))
        return 0
    ctx = mp.get_context("spawn")
    for device in args.devices:
        results = []
        for projector in args.projectors:
            log.info("%s on %s", projector, device)
            queue = ctx.Queue()
            proc = ctx.Process(target=bench_projector, args=(projector, device, args.threads, args.batch, args.seconds,
                                                              args.repeats, args.decode_batches, args.new_tokens, queue))
            proc.start()
            results.append(queue.get())
            proc.join()
        name = device.split(":")[0]
        if args.threads:
            torch.set_num_threads(args.threads)
        report = {"device": device, "machine": machine_description(device), "args": vars(args) | {"out_dir": None},
                  "load_average_1m": round(os.getloadavg()[0], 2),
                  "command": command,
                  "results": results}
        atomic_write_text(args.out_dir / f"sllm_{name}.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out_dir / f"sllm_{name}.md", to_markdown(report))
        print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
