"""Dump one layer of a (pretrained or fine-tuned) speech encoder for a data dir, as N parallel jobs.

The encoder is the ``encoder``/``encoder_conf`` (and ``input_size``) of a training config, e.g.
``conf/tuning/train_hubert_large.yaml``; ``--checkpoint`` loads the encoder weights of a trained
ASR model instead of the pretrained ones. Waveform encoders read ``wav.scp`` (+ ``segments``) at
``--sample_rate``; fbank encoders read the data dir's ``feats.scp`` (normalized as the config says).

``--layer`` picks what is written:
  * ``N``: entry N of the encoder's ``hidden_states()`` (for Hugging Face models 0 is the CNN /
    embedding output and N the N-th transformer layer; negative counts from the end);
  * ``last``: the last entry of ``hidden_states()`` (the encoder output if it has none);
  * ``weighted_sum``: the encoder output with ``encoder_conf.layer: weighted_sum``, i.e. the
    learned layer weights of a fine-tuned ``--checkpoint``.

Job J of N takes the J-th contiguous share of the sorted utterances, encodes them one at a time
(no padding, so the result equals the encoder on that utterance alone) and writes
``OUT/feats.J.ark`` (Kaldi float matrices; ``--dtype float16`` as numpy arrays, which kaldiio
reads back), ``OUT/feats.J.scp``, ``OUT/utt2num_frames.J`` and ``OUT/skipped.J.txt``; job 1 also
writes ``OUT/dump_info.yaml`` (encoder, layer, dtype, dim, frame rate). ``--combine N`` merges the
shares into ``OUT/feats.scp`` and ``OUT/utt2num_frames``; with one job this happens at once.

Example::

    for j in 1 2; do
      python -m speechllm.bin.dump_encoder_features --data_dir data/train --out_dir dump/hubert_l9/train \
          --encoder_config conf/tuning/train_hubert_large.yaml --layer 9 --nj 2 --job $j --device cuda &
    done; wait
    python -m speechllm.bin.dump_encoder_features --out_dir dump/hubert_l9/train --combine 2
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from speechllm.bin import add_job_arguments, check_job_arguments, exit_on_user_error
from speechllm.bin.compute_fbank import combine_fbank_jobs
from speechllm.data.audio import AudioError
from speechllm.data.datadir import DataDirAudio, DataDirError, read_feats_scp, write_utt2num_frames
from speechllm.data.fix_datadir import share_of
from speechllm.tasks.asr import build_encoder, build_normalize
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError, atomic_write_text, load_yaml, save_config
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)

DTYPES = {"float32": np.float32, "float16": np.float16}
Layer = int | str  # an index into hidden_states(), "last" or "weighted_sum"


def parse_layer(text: str) -> Layer:
    """``"9"`` -> 9, ``"-1"`` -> -1, ``"last"``/``"weighted_sum"`` unchanged."""
    if text in ("last", "weighted_sum"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer: expected an integer, 'last' or 'weighted_sum', got {text!r}") from None


def encoder_config(config: dict, layer: Layer) -> dict:
    """The keys of a training config that build its encoder; ``weighted_sum`` switches the encoder to it."""
    out = {k: copy.deepcopy(config[k]) for k in ("encoder", "encoder_conf", "input_size", "normalize", "normalize_conf")
           if k in config}
    if "encoder" not in out:
        raise ConfigError("the encoder config has no 'encoder' key "
                          "(give a training config, e.g. conf/tuning/train_hubert_large.yaml)")
    if layer == "weighted_sum":
        out["encoder_conf"] = {**(out.get("encoder_conf") or {}), "layer": "weighted_sum"}
    return out


class EncoderFeatures:
    """The in-graph computation of a training config's encoder, on one utterance at a time.

    ``__call__(x)`` takes samples ``[S]`` (waveform encoders) or features ``[T, D]`` and returns
    the chosen layer ``[T', D']`` as float32 on the CPU. ``input_kind`` says which input it needs.
    The encoder is built after ``torch.manual_seed(seed)``, so random (``model_config``) weights are
    the same in every job.
    """

    def __init__(self, config: dict, layer: Layer = "last", checkpoint: str | os.PathLike | None = None,
                 device: str = "cpu", seed: int = 0) -> None:
        self.config = encoder_config(config, layer)
        self.layer = layer
        self.device = torch.device(device)
        # seeded: a randomly initialized (model_config) encoder must be the same in every job
        torch.manual_seed(seed)
        self.encoder = build_encoder(self.config)
        self.input_kind = getattr(self.encoder, "input_kind", "fbank")
        # features go through the model's normalization, as in training; audio never does
        self.normalize = build_normalize(self.config) if self.input_kind != "waveform" else None
        if checkpoint is not None:
            self._load(checkpoint)
        elif layer == "weighted_sum":
            logger.warning("--layer weighted_sum without --checkpoint: the layer weights are their initial values")
        self.encoder.to(self.device).eval()
        if self.normalize is not None:
            self.normalize.to(self.device).eval()

    def _load(self, checkpoint: str | os.PathLike) -> None:
        """Encoder (and normalization) weights of a trained ASR model, or a bare encoder state dict."""
        state = load_model_state_dict(checkpoint)
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")} or state
        try:
            self.encoder.load_state_dict(enc)
        except RuntimeError as e:
            raise ConfigError(f"{checkpoint}: weights do not fit the configured encoder: {str(e).splitlines()[0]}") from None
        norm = {k[len("normalize."):]: v for k, v in state.items() if k.startswith("normalize.")}
        if self.normalize is not None and norm:
            self.normalize.load_state_dict(norm)
        logger.info("loaded encoder weights from %s", checkpoint)

    @property
    def name(self) -> str:
        return str(self.config["encoder"])

    def output_dim(self) -> int:
        return int(self.encoder.output_size())

    def frame_rate(self) -> float | None:
        """Output frames per second, when the encoder tells."""
        rate = getattr(self.encoder, "frame_rate", None)
        return float(rate()) if callable(rate) else None

    @torch.no_grad()
    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        # a copy: kaldiio matrices may be read-only, which torch does not support
        x = torch.from_numpy(np.array(x, dtype=np.float32)).unsqueeze(0).to(self.device)
        lens = torch.tensor([x.size(1)], device=self.device)
        if self.normalize is not None:
            x = self.normalize(x, lens)
        if self.layer == "weighted_sum" or not hasattr(self.encoder, "hidden_states"):
            out, out_lens = self.encoder(x, lens)
        else:
            states, out_lens = self.encoder.hidden_states(x, lens)
            index = -1 if self.layer == "last" else int(self.layer)
            if not -len(states) <= index < len(states):
                raise ConfigError(f"--layer {self.layer}: encoder {self.name} has {len(states)} hidden states "
                                  f"(0..{len(states) - 1})")
            out = states[index]
        return out[0, : int(out_lens[0])].float().cpu().numpy()


@dataclass
class DumpJobResult:
    """What one job wrote, and what it skipped (``{utt_id: "where: reason"}``)."""

    num_written: int = 0
    dim: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    skip_kinds: Counter = field(default_factory=Counter)


def _inputs(data_dir: Path, input_kind: str,
            sample_rate: int) -> tuple[list[str], Callable[[str], np.ndarray], Callable[[str], str]]:
    """``(utt_ids, load(utt), where(utt))`` of the audio (waveform encoders) or the fbank features."""
    if input_kind == "waveform":
        audio = DataDirAudio(data_dir, expected_sr=sample_rate)
        return audio.utt_ids(), lambda u: audio.load(u)[0], audio.where
    scp = data_dir / "feats.scp"
    if not scp.is_file():
        raise DataDirError(scp, None, "file not found: this encoder reads fbank features "
                                      "(run stage 3 / compute_fbank first)")
    feats = read_feats_scp(scp)
    return sorted(feats), lambda u: kaldiio.load_mat(feats[u]), lambda u: str(scp)


def dump_encoder_features_job(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    extractor: EncoderFeatures,
    nj: int = 1,
    job: int = 1,
    dtype: str = "float16",
    sample_rate: int = 16000,
    min_dur: float = 0.1,
    info: dict | None = None,
) -> DumpJobResult:
    """Encode the ``job``-th of ``nj`` shares of ``data_dir`` into ``out_dir/feats.{job}.*``.

    Audio shorter than ``min_dur`` seconds, unreadable audio, and utterances the encoder turns
    into no frame are skipped and counted. Raises :class:`DataDirError` if the whole share was.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utt_ids, load, where = _inputs(data_dir, extractor.input_kind, sample_rate)
    utts = share_of(utt_ids, nj, job)
    result, frames = DumpJobResult(), {}
    min_samples = int(min_dur * sample_rate)
    ark = (out / f"feats.{job}.ark").resolve()  # absolute: feats.scp stays valid from any cwd
    scp_tmp = out / f".feats.{job}.scp.tmp"
    # Kaldi's binary matrices hold float32/64 only; float16 goes in as numpy arrays (kaldiio reads both)
    write_function = "numpy" if dtype == "float16" else None
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp_tmp}", write_function=write_function) as writer:
        for utt in tqdm(utts, desc=f"{extractor.name} job {job}/{nj}", unit="utt", disable=None):
            try:
                x = load(utt)
            except AudioError as e:
                result.skipped[utt], kind = f"{where(utt)}: {e}", "unreadable audio"
            else:
                if extractor.input_kind == "waveform" and x.shape[0] < min_samples:
                    result.skipped[utt], kind = f"{where(utt)}: {x.shape[0] / sample_rate:.3f} s < {min_dur} s", "too short"
                else:
                    feats = extractor(x)
                    if feats.shape[0] > 0:
                        writer(utt, feats.astype(DTYPES[dtype]))
                        frames[utt], result.dim = feats.shape[0], feats.shape[1]
                        continue
                    result.skipped[utt], kind = f"{where(utt)}: no output frame", "too short"
            result.skip_kinds[kind] += 1
    # the scp appears last, so a job that died midway leaves no feats.J.scp for --combine
    os.replace(scp_tmp, out / f"feats.{job}.scp")
    write_utt2num_frames(out / f"utt2num_frames.{job}", frames)
    skipped_path = out / f"skipped.{job}.txt"
    atomic_write_text(skipped_path, "".join(f"{u}\t{why}\n" for u, why in sorted(result.skipped.items())))
    result.num_written = len(frames)
    if job == 1:
        dim = result.dim if result.dim is not None else extractor.output_dim()
        save_config({**(info or {}), "encoder": extractor.name, "layer": extractor.layer, "dtype": dtype,
                     "dim": int(dim), "frame_rate": extractor.frame_rate(), "input_kind": extractor.input_kind,
                     "sample_rate": sample_rate, "encoder_conf": extractor.config.get("encoder_conf")},
                    out / "dump_info.yaml")
    kinds = ", ".join(f"{n:,} {k}" for k, n in result.skip_kinds.most_common()) or "none"
    logger.info(
        "%s layer %s job %d/%d: wrote %s utterances (%s); skipped %s of %s utterances (%s); list in %s",
        extractor.name, extractor.layer, job, nj, f"{len(frames):,}", dtype, f"{len(result.skipped):,}",
        f"{len(utts):,}", kinds, skipped_path,
    )
    if utts and not frames:
        raise DataDirError(data_dir, None, f"all {len(utts):,} utterances of job {job} were skipped; see {skipped_path}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", help="data dir with wav.scp (+ segments), or feats.scp for fbank encoders")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--encoder_config", help="YAML with encoder, encoder_conf (and input_size): a training config")
    p.add_argument("--checkpoint", help="trained ASR model (or encoder state dict) whose encoder weights to use")
    p.add_argument("--layer", type=parse_layer, default="last", help="N | last | weighted_sum (default last)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="stored precision (default float16)")
    add_job_arguments(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--sample_rate", type=int, default=16000, help="rate the encoder expects; other rates are skipped")
    p.add_argument("--min_dur", type=float, default=0.1, help="skip shorter audio (seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of randomly initialized (model_config) weights")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if args.combine is not None:
        combine_fbank_jobs(args.out_dir, args.combine)
        return 0
    check_job_arguments(parser, args, required=("data_dir", "encoder_config"))
    extractor = EncoderFeatures(load_yaml(args.encoder_config), args.layer, args.checkpoint, args.device, args.seed)
    info = {"encoder_config": str(args.encoder_config), "checkpoint": args.checkpoint}
    dump_encoder_features_job(args.data_dir, args.out_dir, extractor, args.nj, args.job, args.dtype,
                              args.sample_rate, args.min_dur, info)
    if args.nj == 1:
        combine_fbank_jobs(args.out_dir, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
