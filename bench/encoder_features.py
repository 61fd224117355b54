"""Feature-extraction speed of the pretrained encoder families (what stage 3b costs), per device.

For every family with a tiny config in egs/mini_synth/asr1/conf/tuning/train_<family>_tiny.yaml
(a small random model: no download) that is registered in ENCODERS, the encoder is run exactly as
``dump_encoder_features`` runs it (one utterance at a time, all hidden states, layer ``last``)
over synthetic 16 kHz utterances, after one warm-up utterance. Reported: real-time factor
(extraction seconds / audio seconds) of the median of ``--repeats`` passes, output frames per
second of audio, dimension, parameters, peak memory. Results go to
bench/results/encoder_features_<device>.{json,md} with a description of the machine.

    python bench/encoder_features.py                       # cpu, and cuda when available
    python bench/encoder_features.py --devices cpu --threads 2 --seconds 2 4 8
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # "python bench/encoder_features.py" puts bench/, not the root, on the path

from bench.run_bench import machine_description, peak_memory_mb  # noqa: E402
from speechllm.bin.dump_encoder_features import EncoderFeatures  # noqa: E402
from speechllm.nets.encoders import ENCODERS  # noqa: E402
from speechllm.utils.config import atomic_write_text, load_yaml  # noqa: E402
from speechllm.utils.logging_utils import setup_logging  # noqa: E402

log = logging.getLogger("bench")
FAMILIES = ("hubert", "wav2vec2", "wavlm", "whisper")
TUNING = ROOT / "egs/mini_synth/asr1/conf/tuning"
SAMPLE_RATE = 16000


def synthetic_utterances(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    """Tones with noise at 16 kHz; content does not change the cost of these encoders."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seconds:
        t = np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(t.shape)
        out.append(wave.astype(np.float32))
    return out


def bench_family(family: str, device: str, utts: list[np.ndarray], repeats: int) -> dict:
    """Time the extraction of ``utts`` (``repeats`` passes) with the family's tiny config."""
    config = load_yaml(TUNING / f"train_{family}_tiny.yaml")
    extractor = EncoderFeatures(config, layer="last", device=device)
    n_params = sum(p.numel() for p in extractor.encoder.parameters())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    extractor(utts[0])  # warm-up: allocator, kernels, lazy initialization
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    passes, frames = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        # returns a CPU array: the device -> host copy is part of the cost, as in the dump
        frames = sum(extractor(wave).shape[0] for wave in utts)
        passes.append(time.perf_counter() - start)
    # the median pass: robust to other load on a shared machine
    wall = float(np.median(passes))
    audio_s = sum(len(w) for w in utts) / SAMPLE_RATE
    return {"family": family, "config": str((TUNING / f"train_{family}_tiny.yaml").relative_to(ROOT)),
            "params_m": round(n_params / 1e6, 3), "dim": extractor.output_dim(), "frame_rate": extractor.frame_rate(),
            "utts": len(utts), "repeats": repeats, "audio_s": round(audio_s, 1), "wall_s": round(wall, 4),
            "rtf": round(wall / audio_s, 5), "frames_per_audio_s": round(frames / audio_s, 1),
            "peak_memory_mb": round(peak_memory_mb(device))}


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Encoder feature extraction ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, device {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else "") + f", torch {m['torch']} ({m['torch_threads']} threads)",
             f"Commit {m['commit']}, {m['date']}. Command: `{report['command']}`",
             f"Load average (1 min) when written: {report['load_average_1m']} (other work on the machine slows the timings).", "",
             "Tiny random models (conf/tuning/train_<family>_tiny.yaml), one utterance at a time as "
             "dump_encoder_features runs them, layer `last`; synthetic utterances of "
             f"{', '.join(str(s) for s in report['utterance_seconds'])} s; the median of "
             f"{report['repeats']} passes. RTF = extraction s / audio s. "
             "Peak memory: process RSS on CPU (cumulative), allocated device memory on CUDA.", "",
             "| family | params M | dim | frames per audio s | utts | audio s | wall s | RTF | peak memory MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "skipped" in r:
            lines.append(f"| {r['family']} | - | - | - | - | - | - | {r['skipped']} | - |")
        else:
            lines.append(f"| {r['family']} | {r['params_m']} | {r['dim']} | {r['frames_per_audio_s']} | {r['utts']} "
                         f"| {r['audio_s']} | {r['wall_s']} | {r['rtf']} | {r['peak_memory_mb']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--seconds", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0], help="utterance durations")
    p.add_argument("--repeats", type=int, default=5, help="passes over the utterances; the median pass is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out_dir", type=Path, default=ROOT / "bench/results")
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    utts = synthetic_utterances(args.seconds)
    for device in args.devices:
        results = []
        for family in args.families:
            if family not in ENCODERS:
                results.append({"family": family, "skipped": "not registered in ENCODERS"})
                continue
            log.info("%s on %s", family, device)
            results.append(bench_family(family, device, utts, args.repeats))
        name = device.split(":")[0]
        report = {"device": device, "machine": machine_description(device), "utterance_seconds": args.seconds,
                  "repeats": args.repeats, "load_average_1m": round(os.getloadavg()[0], 2),
                  "command": "python bench/encoder_features.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "results": results}
        atomic_write_text(args.out_dir / f"encoder_features_{name}.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out_dir / f"encoder_features_{name}.md", to_markdown(report))
        print(to_markdown(report))
        log.info("wrote %s/encoder_features_%s.{json,md}", args.out_dir, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
