"""`make bench`: CPU training speed of the mini recipe's ASR model under glibc's malloc and jemalloc.

Batches of varying shapes (length-bucketed, shuffled) make glibc's heap grow for the whole life of
a training process, and its steps slow down with it; the recipes therefore preload jemalloc
(egs/TEMPLATE/asr1/path.sh). Each allocator runs in a fresh child process (LD_PRELOAD set or not)
that trains the recipe's conf/train.yaml model as the Trainer does on the CPU (bf16 autocast where
supported, packed dropout, Adam, gradient clipping, its DataLoader workers) for --steps steps, and
reports throughput and resident memory per window of --window steps. Results:
bench/results/allocator_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import ROOT, ensure_recipe_data, load_recipe_model, machine_description, train_steps  # noqa: E402

from speechllm.data.dataset import ASRDataset  # noqa: E402
from speechllm.nets.dropout import apply_dropout_impl  # noqa: E402
from speechllm.utils.config import atomic_write_text  # noqa: E402
from speechllm.utils.logging_utils import setup_logging  # noqa: E402

log = logging.getLogger("bench")
# the library path.sh preloads: SPEECHLLM_JEMALLOC, else Debian's libjemalloc2
JEMALLOC = os.environ.get("SPEECHLLM_JEMALLOC") or f"/usr/lib/{os.uname().machine}-linux-gnu/libjemalloc.so.2"


def rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_windows(recipe: Path, steps: int, window: int) -> list[dict]:
    """Train ``steps`` steps in this process as the Trainer does on the CPU; per window of
    ``window`` steps: audio seconds per wall second and resident memory at its end."""
    config, tokenizer, model = load_recipe_model(recipe, "cpu")
    apply_dropout_impl(model, "auto", torch.device("cpu"))
    os.chdir(recipe)  # feats.scp holds paths relative to the recipe
    dataset = ASRDataset(recipe / "dump/fbank/train", tokenizer)
    windows, audio_s, start = [], 0.0, time.perf_counter()
    for step, step_audio_s in enumerate(train_steps(model, config, dataset, steps, "cpu", config.get("amp_dtype", "none"),
                                                    grad_clip=float(config.get("grad_clip", 5.0))), 1):
        audio_s += step_audio_s
        if step % window == 0:
            rate, rss = audio_s / (time.perf_counter() - start), rss_mb()
            windows.append({"steps": step, "audio_s_per_wall_s": round(rate, 1), "rss_mb": round(rss)})
            log.info("step %d: %.1f s of audio per s, rss %.0f MB", step, rate, rss)
            audio_s, start = 0.0, time.perf_counter()
    return windows


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Allocator benchmark: {report['recipe']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, torch {m['torch']}",
             f"Commit {m['commit']}, {m['date']}. Command: `{report['command']}`", "",
             f"Training from scratch, {report['steps']} steps per allocator, each in a fresh process; "
             f"audio seconds per wall second and resident memory per window of {report['window']} steps.", "",
             "| allocator | " + " | ".join(f"steps {w['steps']}" for w in report["runs"][0]["windows"])
             + " | mean | rss at the end MB |",
             "|---|" + "---|" * (len(report["runs"][0]["windows"]) + 2)]
    for run in report["runs"]:
        w = run["windows"]
        lines.append(f"| {run['allocator']} | " + " | ".join(str(x["audio_s_per_wall_s"]) for x in w)
                     + f" | {run['mean_audio_s_per_wall_s']} | {w[-1]['rss_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=ROOT / "egs/mini_synth/asr1")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--child", action="store_true", help="(internal) train here and print the windows as JSON")
    args = p.parse_args(argv)
    setup_logging()
    recipe = args.recipe.resolve()
    if args.child:
        with open("/proc/self/maps") as f:
            loaded = "libjemalloc" in f.read()  # the preload took effect, or not
        print(json.dumps({"jemalloc_loaded": loaded, "windows": train_windows(recipe, args.steps, args.window)}))
        return 0
    if not os.path.isfile(JEMALLOC):
        log.error("%s not found: make install installs libjemalloc2 (tools/install_debian_deps.sh)", JEMALLOC)
        return 1
    ensure_recipe_data(recipe)
    runs = []
    for allocator in ("glibc", "jemalloc"):
        env = dict(os.environ)
        preload = [x for x in env.get("LD_PRELOAD", "").split(":") if x and "jemalloc" not in x]
        if allocator == "jemalloc":
            preload.insert(0, JEMALLOC)
        env["LD_PRELOAD"] = ":".join(preload)
        log.info("%s: %d training steps in a fresh process", allocator, args.steps)
        out = subprocess.run([sys.executable, __file__, "--child", "--recipe", str(recipe), "--steps", str(args.steps),
                              "--window", str(args.window)], env=env, check=True, stdout=subprocess.PIPE, text=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        if child["jemalloc_loaded"] != (allocator == "jemalloc"):
            raise RuntimeError(f"{allocator}: jemalloc loaded is {child['jemalloc_loaded']} in the child process")
        windows = child["windows"]
        mean = sum(w["audio_s_per_wall_s"] for w in windows) / len(windows)
        runs.append({"allocator": allocator, "windows": windows, "mean_audio_s_per_wall_s": round(mean, 1)})
    report = {"recipe": str(recipe.relative_to(ROOT)), "machine": machine_description("cpu"),
              "command": "make bench  # python bench/allocator_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "steps": args.steps, "window": args.window, "runs": runs}
    out_dir = ROOT / "bench/results"
    atomic_write_text(out_dir / "allocator_cpu.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "allocator_cpu.md", to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
