r"""Word times of a data dir's transcripts by forced alignment with a trained ASR model.

    python -m speechllm.bin.align_words --model_dir exp/asr_x --checkpoint exp/asr_x/valid.acc.ave.pt \
        --token_list data/token_list/bpe200/tokens.txt --bpemodel data/token_list/bpe200/tokenizer.model \
        --data_dir dump/fbank/train --nj 4 --job 1
    python -m speechllm.bin.align_words --output_dir dump/fbank/train --combine 4

The model and the data are read as ``asr_inference`` reads them (``--model_dir`` or
``--asr_config`` + ``--checkpoint``; ``feats.scp`` or ``wav.scp`` as the model was
trained); the words are those of the data dir's ``text``. Job ``J`` of ``N`` aligns the J-th
contiguous share of the utterances (batched longest first) and writes, in ``--output_dir``
(default: the data dir),

  ``word_align.J``     CTM lines ``utt 1 start duration word`` (seconds; speechllm.align.ctc_align)
  ``align_failed.J``   ``utt<TAB>reason: message`` for each utterance that could not be aligned
                       (no transcript, no features, too few encoder frames for its tokens, ...)

``--combine N`` merges them into ``word_align`` and ``align_failed.txt`` and logs the counts; with
one job this happens at once.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechllm.align.ctc_align import ALIGNERS, AlignmentError, WordTime, read_ctm, write_ctm
from speechllm.bin import add_job_arguments, check_job_arguments, exit_on_user_error
from speechllm.bin.asr_inference import (
    DecodeInputs,
    audio_inputs,
    feature_inputs,
    load_model,
    load_tokenizer,
    resolve_model_config,
)
from speechllm.data.dataset import pad_sequences
from speechllm.data.datadir import DataDirAudio, DataDirError, read_feats_scp, read_text
from speechllm.tasks.asr import resolve_input
from speechllm.utils.config import atomic_write_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)
CTM_NAME, FAILED_NAME = "word_align", "align_failed"


def input_ids(data_dir: Path, raw: bool) -> set[str]:
    """Every utterance with features (``feats.scp``) or audio (``wav.scp`` + ``segments``)."""
    return set(DataDirAudio(data_dir).utt_ids()) if raw else set(read_feats_scp(data_dir / "feats.scp"))


def align_job(aligner, inputs: DecodeInputs, text: dict[str, str], batch_size: int,
              device: str) -> tuple[dict[str, list[WordTime]], dict[str, AlignmentError]]:
    """Word times of ``inputs.utt_ids`` (batched longest first), and why the others failed."""
    aligned: dict[str, list[WordTime]] = {}
    failed = {u: AlignmentError("no_text", "no transcript in text") for u in inputs.utt_ids if u not in text}
    order = sorted((u for u in inputs.utt_ids if u in text), key=lambda u: -inputs.lengths[u])
    with tqdm(total=len(order), desc="align", unit="utt", disable=None) as bar:
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            x, x_lens = pad_sequences([torch.from_numpy(np.array(inputs.load(u), dtype=np.float32)) for u in batch])
            for utt, result in zip(batch, aligner.align_batch(x.to(device), x_lens.to(device),
                                                             [text[u] for u in batch])):
                (failed if isinstance(result, AlignmentError) else aligned)[utt] = result
            bar.update(len(batch))
    return aligned, failed


def write_failures(path: Path, failed: dict[str, AlignmentError]) -> None:
    atomic_write_text(path, "".join(f"{u}\t{e.reason}: {e}\n" for u, e in sorted(failed.items())))


def run_job(args: argparse.Namespace) -> None:
    """Align this job's share of ``--data_dir``; write ``word_align.J`` and ``align_failed.J``."""
    tokenizer = load_tokenizer(args)
    model_config = resolve_model_config(args, None)
    model = load_model(args, model_config, tokenizer.vocab_size).to(args.device)
    aligner = ALIGNERS[args.aligner](model, tokenizer)
    raw = resolve_input(model_config) == "raw"
    if raw:
        sample_rate = int((model_config.get("input_conf") or {}).get("sample_rate", 16000))
        inputs = audio_inputs(args.data_dir, args.nj, args.job, sample_rate)
    else:
        inputs = feature_inputs(args.data_dir, args.nj, args.job)
    text = read_text(args.data_dir / "text")
    aligned, failed = align_job(aligner, inputs, text, args.batch_size, args.device)
    if args.job == 1:  # transcripts without audio are listed once, by the first job
        no_input = sorted(set(text) - input_ids(args.data_dir, raw))
        failed.update({u: AlignmentError("no_input", "in text but without features/audio") for u in no_input})
    write_ctm(args.output_dir / f"{CTM_NAME}.{args.job}", aligned)
    write_failures(args.output_dir / f"{FAILED_NAME}.{args.job}", failed)
    log.info("job %d/%d: aligned %s of %s utterances (%.1f s of words, frame shift %.3f s); %s failed",
             args.job, args.nj, f"{len(aligned):,}", f"{len(aligned) + len(failed):,}",
             sum(w[-1].end - w[0].start for w in aligned.values()), aligner.frame_shift, f"{len(failed):,}")


def combine_jobs(out_dir: Path, nj: int) -> tuple[int, Counter]:
    """Merge the job outputs into ``word_align`` and ``align_failed.txt``; returns
    ``(aligned utterances, failures by reason)``."""
    merged: dict[str, list[WordTime]] = {}
    failed_lines: list[str] = []
    for j in range(1, nj + 1):
        ctm, failed = out_dir / f"{CTM_NAME}.{j}", out_dir / f"{FAILED_NAME}.{j}"
        if not (ctm.is_file() and failed.is_file()):
            raise DataDirError(ctm, None, f"missing: job {j} of {nj} has not finished")
        merged.update(read_ctm(ctm))
        failed_lines += failed.read_text(encoding="utf-8").splitlines(keepends=True)
    write_ctm(out_dir / CTM_NAME, merged)
    failed_path = out_dir / f"{FAILED_NAME}.txt"
    atomic_write_text(failed_path, "".join(sorted(failed_lines)))
    reasons = Counter(line.split("\t", 1)[1].split(":", 1)[0] for line in failed_lines)
    why = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    log.info("aligned %s of %s utterances in %s; %s failed%s; list in %s", f"{len(merged):,}",
             f"{len(merged) + len(failed_lines):,}", out_dir / CTM_NAME, f"{len(failed_lines):,}",
             f" ({why})" if why else "", failed_path)
    return len(merged), reasons


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model (as in asr_inference)")
    for name, what in (("model_dir", "dir with config.yaml (+ model.pt, tokens.txt, tokenizer.model)"),
                       ("asr_config", "training config.yaml, instead of --model_dir"),
                       ("checkpoint", "model weights (Trainer checkpoint or state dict)"),
                       ("token_list", "tokens.txt (default: model_dir/tokens.txt)"),
                       ("bpemodel", "sentencepiece model (default: model_dir/tokenizer.model)")):
        g.add_argument(f"--{name}", type=Path, help=what)
    p.add_argument("--aligner", default="ctc", choices=sorted(ALIGNERS), help="alignment method")
    p.add_argument("--data_dir", type=Path, help="data dir with text and feats.scp (or wav.scp)")
    p.add_argument("--output_dir", type=Path, help="where word_align goes (default: --data_dir)")
    add_job_arguments(p)
    p.add_argument("--batch_size", type=int, default=16, help="utterances encoded together")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--log_level", default="INFO")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Align this job's share (or ``--combine`` the jobs); 1 with a one-line message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    args.output_dir = args.output_dir or args.data_dir
    if args.combine is not None:
        if args.output_dir is None:
            parser.error("--combine needs --output_dir (or --data_dir)")
        combine_jobs(args.output_dir, args.combine)
        return 0
    check_job_arguments(parser, args, required=("data_dir",))
    run_job(args)
    if args.nj == 1:
        combine_jobs(args.output_dir, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
