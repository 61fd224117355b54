r"""Decode a Kaldi-style feature directory with a trained ASR model.

    python -m speechllm.bin.asr_inference --model_dir exp/asr_x --checkpoint exp/asr_x/valid.acc.ave.pt \
        --token_list data/token_list/bpe500/tokens.txt --bpemodel data/token_list/bpe500/bpe.model \
        --data_dir dump/fbank/test --output_dir exp/asr_x/decode/test --job 1 --nj 4 \
        --config conf/decode.yaml --beam_size 10 --ctc_weight 0.3 \
        [--lm_dir exp/lm_x --lm_checkpoint exp/lm_x/valid.loss.ave.pt --lm_weight 0.3]

The model comes from ``--model_dir`` (its ``config.yaml``; ``model.pt``, ``tokens.txt`` and
``tokenizer.model`` are used when present, as in a packed model), or from ``--asr_config`` +
``--checkpoint``. ``--config`` is a YAML of decoding options (the keys printed by
``--print_config``); without ``--model_dir``/``--asr_config`` it may instead be the training
config itself. Command-line flags override the YAML.

Shallow fusion (``mode: beam``): ``--lm_dir`` is a ``--task lm`` run trained on this model's token
list (its ``config.yaml``; weights ``--lm_checkpoint``, default ``LM_DIR/valid.loss.ave.pt``), and
``lm_weight`` (> 0) weights its log-probabilities in the search (``speechllm.search.beam_search``).
A different token list or vocabulary size is an error, so is ``lm_weight > 0`` without an LM.

``lexicon`` (``mode: beam``): a word list (the first field of each line, so a Kaldi
``lexicon.txt`` also works); hypotheses then spell only its words
(:mod:`speechllm.search.lexicon`), e.g. the words of the LM's training text.

The data dir is read as the model was trained (the training config's ``input``): matrices of
``feats.scp`` (``fbank``, ``dumped``), or audio of ``wav.scp`` + ``segments`` (``raw``).
Job ``J`` of ``N`` decodes the J-th contiguous share (1-based) of its utterances in id order,
batched longest first, and writes
  ``output_dir/text.J``   ``utt_id hypothesis``           (1-best, sorted by id)
  ``output_dir/nbest.J``  ``utt_id rank score hypothesis`` (rank from 1, score = search log score)
  ``output_dir/gen_info.J`` ``utt_id num_tokens stopped`` (stopped 0: the 1-best reached the token
                          bound of ``maxlen_ratio``, where the beam search forces ``<eos>``: a cut
                          hypothesis, counted by the scoring stage)
The last log line reports the real-time factor: decoding seconds / audio seconds, with audio
seconds = frames x 10 ms (fbank), frames / frame_rate of ``dump_info.yaml`` (dumped features) or
samples / sample rate (raw audio).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import kaldiio
import numpy as np
import torch
import yaml
from tqdm import tqdm

from speechllm.bin import exit_on_user_error
from speechllm.data.audio import AudioError, compute_utt2dur
from speechllm.data.dataset import pad_sequences
from speechllm.data.datadir import DataDirAudio, read_feats_scp, read_utt2dur, read_utt2num_frames
from speechllm.data.fix_datadir import share_of
from speechllm.search.beam_search import at_length_bound, batch_beam_search
from speechllm.search.greedy_ctc import greedy_ctc
from speechllm.search.lexicon import LexiconConstraint, read_word_list
from speechllm.search.lm_scorer import CausalLMScorer
from speechllm.tasks.asr import build_model, resolve_input
from speechllm.tasks.lm import load_unit_lm
from speechllm.text.tokenizer import Tokenizer
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError, atomic_write_text, load_yaml, save_config
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger(__name__)

FRAME_SHIFT_S = 0.01
DECODE_DEFAULTS: dict[str, Any] = {
    "mode": "beam",          # beam | greedy_ctc
    "beam_size": 10,
    "ctc_weight": 0.3,       # 1.0: pure CTC prefix beam search
    "length_bonus": 0.0,
    "maxlen_ratio": 0.0,     # max tokens = ratio x encoder frames; 0: encoder frames
    "nbest": 1,
    "lm_weight": 0.0,        # > 0: shallow fusion with the LM of --lm_dir
    "lexicon": None,         # word list: hypotheses spell only its words (mode beam)
    "batch_size": 8,
    "device": "cpu",
}
Hypotheses = list[list[tuple[list[int], float]]]


def decode_beam(model: torch.nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, opts: dict,
                lm: CausalLMScorer | None = None, constraint: LexiconConstraint | None = None) -> Hypotheses:
    """Joint CTC/attention beam search (pure CTC prefix search when ctc_weight is 1), with the LM
    fused and the words restricted to a lexicon when given."""
    ctc_logp = model.ctc.log_softmax(enc) if model.ctc is not None and opts["ctc_weight"] > 0 else None
    return batch_beam_search(
        model.decoder, enc, enc_lens, ctc_logp, beam_size=opts["beam_size"], ctc_weight=opts["ctc_weight"],
        length_bonus=opts["length_bonus"], maxlen_ratio=opts["maxlen_ratio"], nbest=opts["nbest"],
        sos=model.sos, eos=model.eos, blank=model.blank,
        lm=lm, lm_weight=opts["lm_weight"] if lm is not None else 0.0, constraint=constraint,
    )


def decode_greedy_ctc(model: torch.nn.Module, enc: torch.Tensor, enc_lens: torch.Tensor, opts: dict,
                      lm: CausalLMScorer | None = None, constraint: LexiconConstraint | None = None) -> Hypotheses:
    """Best-path CTC: one hypothesis per utterance (no LM or lexicon: ``resolve_options`` refuses them)."""
    if model.ctc is None:
        raise ConfigError("mode greedy_ctc: the model has no CTC head (trained with ctc_weight 0)")
    return [[hyp] for hyp in greedy_ctc(model.ctc.log_softmax(enc), enc_lens, blank=model.blank)]


MODES: dict[str, Callable[..., Hypotheses]] = {  # (model, enc, enc_lens, opts, lm, constraint) -> N-best lists
    "beam": decode_beam,
    "greedy_ctc": decode_greedy_ctc,
}


def get_parser() -> argparse.ArgumentParser:
    """Command-line options; decoding options default to None so that --config can fill them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model_dir", type=Path, help="dir with config.yaml (+ model.pt, tokens.txt, tokenizer.model)")
    g.add_argument("--asr_config", type=Path, help="training config.yaml, instead of --model_dir")
    g.add_argument("--checkpoint", type=Path, help="model weights (Trainer checkpoint or state dict)")
    g.add_argument("--token_list", type=Path, help="tokens.txt (default: model_dir/tokens.txt)")
    g.add_argument("--bpemodel", type=Path, help="sentencepiece model (default: model_dir/tokenizer.model)")
    g.add_argument("--lm_dir", type=Path, help="LM trained on the same token list (--task lm exp dir), for lm_weight")
    g.add_argument("--lm_checkpoint", type=Path, help="LM weights (default: lm_dir/valid.loss.ave.pt)")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", type=Path, help="data dir with feats.scp (and optionally utt2num_frames)")
    g.add_argument("--output_dir", type=Path, help="writes text.JOB and nbest.JOB here")
    g.add_argument("--job", type=int, default=1, help="1-based job index")
    g.add_argument("--nj", type=int, default=1, help="number of jobs")
    g = p.add_argument_group("decoding (defaults: --print_config)")
    g.add_argument("--config", type=Path, help="YAML with decoding options")
    d = DECODE_DEFAULTS
    g.add_argument("--mode", choices=sorted(MODES), help=f"search (default {d['mode']})")
    g.add_argument("--beam_size", type=int, help=f"hypotheses per utterance (default {d['beam_size']})")
    g.add_argument("--ctc_weight", type=float,
                   help=f"CTC prefix-score weight; 1.0: pure CTC prefix beam search (default {d['ctc_weight']})")
    g.add_argument("--length_bonus", type=float, help=f"score added per token (default {d['length_bonus']})")
    g.add_argument("--maxlen_ratio", type=float,
                   help=f"max tokens = ratio x encoder frames; 0: encoder frames (default {d['maxlen_ratio']})")
    g.add_argument("--nbest", type=int, help=f"hypotheses written to nbest.JOB (default {d['nbest']})")
    g.add_argument("--lm_weight", type=float,
                   help=f"weight of the --lm_dir LM's log-probabilities, mode beam (default {d['lm_weight']})")
    g.add_argument("--lexicon", help="word list (first field per line): hypotheses spell only its words, mode beam")
    g.add_argument("--batch_size", type=int, help=f"utterances decoded together (default {d['batch_size']})")
    g.add_argument("--device", help=f"cpu, cuda, cuda:1, ... (default {d['device']})")
    p.add_argument("--print_config", action="store_true", help="print the resolved decoding options and exit")
    p.add_argument("--log_level", default="INFO")
    return p


def _is_training_config(cfg: dict) -> bool:
    return "encoder" in cfg or "encoder_conf" in cfg


def resolve_options(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """``(decoding options, model config or None)`` from defaults <- --config YAML <- flags."""
    opts = dict(DECODE_DEFAULTS)
    model_config = None
    if args.config is not None:
        cfg = load_yaml(args.config)
        if args.model_dir is None and args.asr_config is None and _is_training_config(cfg):
            model_config = cfg  # "--config train.yaml --checkpoint x.pt"
        else:
            unknown = sorted(set(cfg) - set(DECODE_DEFAULTS))
            if unknown:
                raise ConfigError(
                    f"{args.config}: unknown decoding option(s) {unknown}; allowed: {sorted(DECODE_DEFAULTS)}"
                )
            opts.update(cfg)
    for key in DECODE_DEFAULTS:
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if opts["mode"] not in MODES:
        raise ConfigError(f"mode: unknown choice {opts['mode']!r}; choose one of {sorted(MODES)}")
    _check_lm_options(args, opts)
    if opts["lexicon"] is not None and opts["mode"] != "beam":
        raise ConfigError(f"lexicon {opts['lexicon']}: a word list needs mode beam, not {opts['mode']}")
    return opts, model_config


def _check_lm_options(args: argparse.Namespace, opts: dict) -> None:
    weight = opts["lm_weight"]
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"lm_weight: expected a number >= 0, got {weight!r}")
    if weight > 0 and args.lm_dir is None:
        raise ConfigError(f"lm_weight {weight} needs an LM: give --lm_dir")
    if weight > 0 and opts["mode"] != "beam":
        raise ConfigError(f"lm_weight {weight}: shallow fusion needs mode beam, not {opts['mode']}")
    if args.lm_dir is not None and weight == 0:
        log.warning("--lm_dir %s given but lm_weight is 0: decoding without the LM", args.lm_dir)


def load_lm(args: argparse.Namespace, tokenizer: Tokenizer, device: str) -> CausalLMScorer:
    """The LM of ``--lm_dir`` as a scorer for the search; its token list must be the ASR's."""
    checkpoint = args.lm_checkpoint or args.lm_dir / "valid.loss.ave.pt"
    return CausalLMScorer(load_unit_lm(args.lm_dir, checkpoint, tokenizer).lm.to(device))


def load_lexicon(path: str | Path, tokenizer: Tokenizer) -> LexiconConstraint:
    """The search constraint of the word list ``path`` over the tokenizer's tokens."""
    words = read_word_list(path)
    constraint = LexiconConstraint(tokenizer.token_list, words, eos=tokenizer.sos_eos_id)
    log.info("lexicon %s: hypotheses restricted to its %d words", path, len(constraint.words))
    return constraint


def _first_existing(*paths: Path | None) -> Path | None:
    return next((p for p in paths if p is not None and p.is_file()), None)


def resolve_model_config(args: argparse.Namespace, model_config: dict | None) -> dict:
    """The training config: ``--asr_config``, ``--model_dir/config.yaml`` or the one given as ``--config``."""
    if args.asr_config is not None:
        model_config = load_yaml(args.asr_config)
    elif args.model_dir is not None:
        model_config = load_yaml(args.model_dir / "config.yaml")
    if model_config is None:
        raise ConfigError("no model: give --model_dir, --asr_config, or a training config as --config")
    return model_config


def load_model(args: argparse.Namespace, model_config: dict | None, vocab_size: int) -> torch.nn.Module:
    """Build the model from its training config and load the checkpoint weights."""
    model_config = resolve_model_config(args, model_config)
    ckpt = args.checkpoint or (args.model_dir / "model.pt" if args.model_dir else None)
    if ckpt is None or not ckpt.is_file():
        raise ConfigError(f"checkpoint {ckpt} not found (give --checkpoint)")
    cmvn = None
    stats = (model_config.get("normalize_conf") or {}).get("stats_file")
    if model_config.get("normalize") and stats:
        # Relative paths work from the recipe dir or, in a packed model, from the model dir.
        found = _first_existing(Path(stats), args.model_dir / stats if args.model_dir else None)
        cmvn = found if found is not None else stats
    model = build_model(model_config, vocab_size, cmvn_stats_path=cmvn)
    model.load_state_dict(load_model_state_dict(ckpt))
    log.info("loaded %s (%.1fM parameters)", ckpt, sum(p.numel() for p in model.parameters()) / 1e6)
    return model.eval()


def _adapt_ctc_weight(model: torch.nn.Module, opts: dict) -> None:
    # A pure CTC model has no decoder, a pure attention model no CTC head: say so and adapt.
    if model.decoder is None and opts["ctc_weight"] < 1.0:
        log.warning("model has no decoder: decoding with ctc_weight 1.0 instead of %s", opts["ctc_weight"])
        opts["ctc_weight"] = 1.0
    if model.ctc is None and opts["ctc_weight"] > 0.0:
        log.warning("model has no CTC head: decoding with ctc_weight 0.0 instead of %s", opts["ctc_weight"])
        opts["ctc_weight"] = 0.0


def utterance_lengths(data_dir: Path, feats: dict[str, str], utts: list[str]) -> dict[str, int]:
    """Frames per utterance from ``utt2num_frames`` when present, else from the matrices."""
    path = data_dir / "utt2num_frames"
    if path.is_file():
        table = read_utt2num_frames(path)
        missing = [u for u in utts if u not in table]
        if not missing:
            return {u: table[u] for u in utts}
        log.warning("%s lacks %d utterances; reading their matrices", path, len(missing))
    return {u: int(kaldiio.load_mat(feats[u]).shape[0]) for u in utts}


def _batch_tensors(mats: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # np.array copies: kaldiio arrays may be read-only; [T, D] matrices or [S] waveforms
    x, lens = pad_sequences([torch.from_numpy(np.array(m, dtype=np.float32)) for m in mats])
    return x.to(device), lens.to(device)


@dataclass
class DecodeInputs:
    """What one job decodes: ``load(utt)`` gives ``[T, D]`` features or ``[S]`` samples;
    ``lengths`` are in the same units, ``seconds_per_unit`` turns them into audio seconds."""

    utt_ids: list[str]
    load: Callable[[str], np.ndarray]
    lengths: dict[str, int]
    seconds_per_unit: float


def feature_inputs(data_dir: Path, nj: int, job: int) -> DecodeInputs:
    """This job's share of ``feats.scp``: fbank (10 ms frames) or dumped encoder features (their
    ``dump_info.yaml`` gives the frame rate)."""
    feats = read_feats_scp(data_dir / "feats.scp")
    utts = share_of(sorted(feats), nj, job)
    frame_s = FRAME_SHIFT_S
    if (data_dir / "dump_info.yaml").is_file():
        rate = load_yaml(data_dir / "dump_info.yaml").get("frame_rate")
        frame_s = 1.0 / float(rate) if rate else frame_s
    return DecodeInputs(utts, lambda u: kaldiio.load_mat(feats[u]), utterance_lengths(data_dir, feats, utts), frame_s)


def audio_inputs(data_dir: Path, nj: int, job: int, sample_rate: int) -> DecodeInputs:
    """This job's share of ``wav.scp`` (+ ``segments``) as raw audio at ``sample_rate``."""
    audio = DataDirAudio(data_dir, expected_sr=sample_rate)
    utts = share_of(audio.utt_ids(), nj, job)
    durs = read_utt2dur(data_dir / "utt2dur") if (data_dir / "utt2dur").is_file() else {}
    missing = [u for u in utts if u not in durs]
    if missing:  # segment bounds, or audio headers (no segments: utterance = recording)
        segs = {u: audio.segments[u] for u in missing} if audio.segments is not None else None
        measured, _ = compute_utt2dur({u: audio.wav[u][1] for u in missing} if segs is None else {}, segs)
        durs = {**durs, **measured}
    # an unmeasurable utterance sorts last; loading it raises the AudioError that names it
    lengths = {u: round(durs.get(u, 0.0) * sample_rate) for u in utts}

    def load(utt: str) -> np.ndarray:
        try:
            return audio.load(utt)[0]
        except AudioError as e:
            raise AudioError(f"{audio.where(utt)}: {e}") from None

    return DecodeInputs(utts, load, lengths, 1.0 / sample_rate)


def load_tokenizer(args: argparse.Namespace) -> Tokenizer:
    """Tokenizer from --token_list/--bpemodel, else the files in --model_dir / next to the token list."""
    token_list = args.token_list or (args.model_dir / "tokens.txt" if args.model_dir else None)
    if token_list is None or not token_list.is_file():
        raise ConfigError(f"token list {token_list} not found (give --token_list)")
    bpemodel = args.bpemodel or _first_existing(args.model_dir / "tokenizer.model" if args.model_dir else None)
    if bpemodel is None:
        bpemodel = next(iter(sorted(token_list.parent.glob("*.model"))), None)
    if bpemodel is None or not bpemodel.is_file():
        raise ConfigError(f"sentencepiece model {bpemodel} not found (give --bpemodel)")
    try:
        return Tokenizer(bpemodel, token_list)
    except ValueError as e:  # token list and sentencepiece model do not belong together
        raise ConfigError(str(e)) from None


def decode_utterances(model: torch.nn.Module, feats: Mapping[str, str] | None, order: list[str], opts: dict,
                      job_name: str, load: Callable[[str], np.ndarray] | None = None,
                      lm: CausalLMScorer | None = None, constraint: LexiconConstraint | None = None,
                      ) -> tuple[dict[str, Hypotheses], list[str], list[str]]:
    """N-best lists of ``order`` (in batches of ``batch_size``), the utterances too short to
    encode, and (beam mode) those whose 1-best reached the token bound (``maxlen_ratio``).

    Each utterance is ``load(utt)`` (features ``[T, D]`` or samples ``[S]``); by default the
    matrix ``feats[utt]`` of a ``feats.scp``.
    """
    if load is None:
        load = lambda u: kaldiio.load_mat(feats[u])  # noqa: E731
    results: dict[str, list[tuple[list[int], float]]] = {}
    too_short: list[str] = []
    cut: list[str] = []
    with torch.no_grad(), tqdm(total=len(order), desc=f"decode {job_name}", unit="utt") as bar:
        for i in range(0, len(order), opts["batch_size"]):
            batch = order[i : i + opts["batch_size"]]
            x, x_lens = _batch_tensors([load(u) for u in batch], opts["device"])
            enc, enc_lens = model.encode(x, x_lens)
            ok = (enc_lens > 0).tolist()  # shorter than the subsampling window: no frame to decode
            too_short += [u for u, good in zip(batch, ok) if not good]
            results.update({u: [([], float("-inf"))] for u, good in zip(batch, ok) if not good})
            if any(ok):
                idx = torch.tensor([j for j, good in enumerate(ok) if good], device=enc.device)
                kept = [u for u, good in zip(batch, ok) if good]
                hyps = MODES[opts["mode"]](model, enc[idx], enc_lens[idx], opts, lm, constraint)
                results.update(zip(kept, hyps))
                if opts["mode"] == "beam":
                    bound = at_length_bound(hyps, enc_lens[idx], opts["maxlen_ratio"], model.decoder, opts["ctc_weight"])
                    cut += [u for u, at_bound in zip(kept, bound) if at_bound]
            bar.update(len(batch))
    return results, too_short, cut


def write_outputs(output_dir: Path, job: int, results: dict, tokenizer: Tokenizer, cut: Sequence[str] = ()) -> None:
    """``text.JOB`` (utt hyp), ``nbest.JOB`` (utt rank score hyp) and ``gen_info.JOB`` (utt
    num_tokens stopped; 0 for the ``cut`` ones), sorted by utterance id."""
    text_lines, nbest_lines, info_lines = [], [], []
    cut_ids = set(cut)
    for utt in sorted(results):
        texts = [(tokenizer.decode(ids), score) for ids, score in results[utt]]
        text_lines.append(f"{utt} {texts[0][0]}".rstrip() + "\n")
        nbest_lines += [f"{utt} {r} {score:.4f} {text}".rstrip() + "\n" for r, (text, score) in enumerate(texts, 1)]
        info_lines.append(f"{utt} {len(results[utt][0][0])} {0 if utt in cut_ids else 1}\n")
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / f"text.{job}", "".join(text_lines))
    atomic_write_text(output_dir / f"nbest.{job}", "".join(nbest_lines))
    atomic_write_text(output_dir / f"gen_info.{job}", "".join(info_lines))


def decode(args: argparse.Namespace, opts: dict, model_config: dict | None) -> None:
    """Decode this job's share of the data dir and write ``text.JOB`` / ``nbest.JOB``."""
    tokenizer = load_tokenizer(args)
    model_config = resolve_model_config(args, model_config)
    model = load_model(args, model_config, tokenizer.vocab_size).to(opts["device"])
    _adapt_ctc_weight(model, opts)
    lm = load_lm(args, tokenizer, opts["device"]) if opts["lm_weight"] > 0 else None
    constraint = load_lexicon(opts["lexicon"], tokenizer) if opts["lexicon"] is not None else None
    if resolve_input(model_config) == "raw":
        sample_rate = int((model_config.get("input_conf") or {}).get("sample_rate", 16000))
        inputs = audio_inputs(args.data_dir, args.nj, args.job, sample_rate)
    else:
        inputs = feature_inputs(args.data_dir, args.nj, args.job)
    lengths = inputs.lengths
    order = sorted(inputs.utt_ids, key=lambda u: -lengths[u])  # similar lengths batch together: less padding

    start = time.perf_counter()
    results, too_short, cut = decode_utterances(model, None, order, opts, f"job {args.job}/{args.nj}",
                                                load=inputs.load, lm=lm, constraint=constraint)
    elapsed = time.perf_counter() - start
    write_outputs(args.output_dir, args.job, results, tokenizer, cut)
    if cut:
        log.warning("%d of %d hypotheses reached the token bound (maxlen_ratio %s) and were cut: %s",
                    len(cut), len(results), opts["maxlen_ratio"], " ".join(sorted(cut)[:10]))
    if too_short:
        log.warning("%d of %d utterances too short for the encoder (empty hypotheses): %s",
                    len(too_short), len(results), " ".join(too_short[:10]))
    audio_s = sum(lengths.values()) * inputs.seconds_per_unit
    log.info("decoded %d utterances (%.1f s of audio) in %.1f s (reading + decoding) on %s: RTF %.4f",
             len(results), audio_s, elapsed, opts["device"], elapsed / max(audio_s, 1e-9))


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, decode this job's share; 1 with a one-line message on bad input."""
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    opts, model_config = resolve_options(args)
    if args.print_config:
        print(yaml.safe_dump(opts, sort_keys=False), end="")
        return 0
    missing = [f"--{n}" for n in ("data_dir", "output_dir") if getattr(args, n) is None]
    if missing:
        raise ConfigError("missing " + ", ".join(missing))
    if not 1 <= args.job <= args.nj:
        raise ConfigError(f"--job {args.job} is not in 1..{args.nj}")
    sources = {k: str(getattr(args, k)) for k in ("model_dir", "asr_config", "checkpoint", "config", "data_dir",
                                                  "lm_dir", "lm_checkpoint") if getattr(args, k) is not None}
    save_config({**opts, **sources}, args.output_dir / "decode_config.yaml")
    decode(args, opts, model_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
