"""Plan, synthesize and write a synthetic speech corpus as Kaldi data dirs.

1. :func:`plan_corpus` decides, in one seeded pass, every utterance: verse, voice, speaking
   rate, pitch, timbre (formant shift), noise colour and SNR, output level. The plan alone
   fixes the corpus, so the result does not depend on ``nj`` or on the order in which workers
   finish.
2. :func:`synthesize_corpus` renders the plan in ``nj`` processes (TTS -> noise -> level ->
   16-bit wav, written atomically) with a progress bar; a wav that already exists for the same
   plan is reused. Failures are collected with their messages, never dropped silently.
3. :func:`write_data_dirs` writes ``wav.scp`` (absolute paths), ``text`` (normalized),
   ``utt2spk`` (speaker = voice id), ``spk2utt``, ``utt2dur`` per split, plus a per-utterance
   ``utt_info`` table of the conditions for analysis by condition.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechllm.corpus.kjv_text import Verse
from speechllm.corpus.noise import add_noise
from speechllm.corpus.tts_voices import SAMPLE_RATE, VOICES, SynthesisError, synthesize, synthesize_batch
from speechllm.data.datadir import DataDir, utt2spk_to_spk2utt, write_data_dir
from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conditions:
    """Ranges the per-utterance conditions are drawn from (uniformly unless stated)."""

    rate: tuple[float, float] = (0.9, 1.2)       # speed factor
    pitch: tuple[float, float] = (-2.0, 2.0)     # F0 shift, semitones
    # formant shift, semitones (tts_voices module doc): +-2 is +-12% formant frequencies, about
    # the spread between adult speakers of one sex. Not applied to plan_corpus's natural_splits.
    timbre: tuple[float, float] = (-2.0, 2.0)
    snrs: tuple[float | None, ...] = (None, 20.0, 15.0, 10.0)  # None = clean; equally likely
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown")
    peak_db: tuple[float, float] = (-12.0, -1.0)  # output peak level, dBFS


@dataclass(frozen=True)
class UttPlan:
    """Everything needed to render one utterance, and where it comes from."""

    utt_id: str
    split: str
    verse_ref: str
    text: str          # verse as printed (punctuation guides the TTS phrasing)
    transcript: str    # normalized, what the data dir's text holds
    voice: str
    rate: float
    pitch: float
    timbre: float      # formant shift, semitones (0 = the voice as it is)
    noise: str         # "none" or a noise colour
    snr_db: float | None
    peak_db: float

    @property
    def seed(self) -> int:
        """Per-utterance noise seed: independent of worker order and of ``nj``."""
        return zlib.crc32(self.utt_id.encode("utf-8"))


def _weighted_voice(rng: random.Random, voices: Sequence[str], avoid: str | None = None) -> str:
    weights = [VOICES[v].get("weight", 1.0) for v in voices]
    for _ in range(20):
        v = rng.choices(voices, weights=weights)[0]
        if v != avoid or len(voices) == 1:
            return v
    return v


def plan_corpus(split_verses: Mapping[str, Sequence[Verse]], num_utts: Mapping[str, int],
                split_voices: Mapping[str, Sequence[str]], seed: int,
                conditions: Conditions = Conditions(),
                balanced_splits: Container[str] = ("test",),
                natural_splits: Container[str] = ("test",)) -> list[UttPlan]:
    """Plan ``num_utts[split]`` utterances per split from that split's verses and voices.

    Voices are drawn by their registry ``weight``, except in ``balanced_splits`` (the test set),
    which cycle through their voices so that each held-out voice gets the same share. Voices
    in ``natural_splits`` (the test set) keep their own timbre: a held-out voice is tested as
    it is; elsewhere each utterance gets a timbre from ``conditions.timbre``. When a
    split needs more utterances than it has verses, verses are reused with a different voice
    (utterance ids get an ``_r<k>`` suffix).
    """
    rng = random.Random(seed)
    plans: list[UttPlan] = []
    for split in sorted(split_verses):
        verses, voices, n = list(split_verses[split]), list(split_voices[split]), num_utts[split]
        if n and not verses:
            raise ValueError(f"split {split}: no verses for {n} utterances")
        for v in voices:
            if v not in VOICES:
                raise KeyError(f"split {split}: unknown voice '{v}'")
        balanced = split in balanced_splits
        last_voice: dict[str, str] = {}
        for i in range(n):
            verse = verses[i % len(verses)]
            rep = i // len(verses)
            if balanced:
                voice = voices[(i + rep) % len(voices)]
            else:
                voice = _weighted_voice(rng, voices, avoid=last_voice.get(verse.ref))
            last_voice[verse.ref] = voice
            snr = rng.choice(conditions.snrs)
            timbre = 0.0 if split in natural_splits else round(rng.uniform(*conditions.timbre), 2)
            plans.append(UttPlan(
                utt_id=f"{voice}-{verse.id_part}" + (f"_r{rep}" if rep else ""),
                split=split, verse_ref=verse.ref, text=verse.text, transcript=verse.transcript,
                voice=voice,
                rate=round(rng.uniform(*conditions.rate), 3),
                pitch=round(rng.uniform(*conditions.pitch), 2),
                timbre=timbre,
                noise="none" if snr is None else rng.choice(conditions.noise_kinds),
                snr_db=snr,
                peak_db=round(rng.uniform(*conditions.peak_db), 2),
            ))
    ids = [p.utt_id for p in plans]
    if len(set(ids)) != len(ids):
        raise ValueError("utterance ids are not unique; are train/dev/test verses disjoint?")
    return plans


def plan_digest(plans: Iterable[UttPlan]) -> str:
    """A short hash of the plan: wavs on disk are reused only for the same digest."""
    payload = json.dumps([dataclasses.asdict(p) for p in plans], sort_keys=True)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def finish_utterance(plan: UttPlan, wave: np.ndarray) -> np.ndarray:
    """Add the planned noise to synthesized speech and scale it to the planned peak level."""
    if plan.snr_db is not None:
        wave, _ = add_noise(wave, plan.snr_db, plan.noise, np.random.default_rng(plan.seed), SAMPLE_RATE)
    peak = float(np.max(np.abs(wave)))
    return (wave * (10 ** (plan.peak_db / 20) / peak)).astype(np.float32)


def render_utterance(plan: UttPlan) -> np.ndarray:
    """Synthesize, add noise and set the level of one planned utterance (16 kHz float32)."""
    return finish_utterance(plan, synthesize(plan.text, plan.voice, rate=plan.rate, pitch=plan.pitch,
                                             timbre=plan.timbre))


def wav_path(audio_dir: str | os.PathLike, plan: UttPlan) -> Path:
    """Where an utterance's wav lives: ``<audio_dir>/<split>/<utt_id>.wav``."""
    return Path(audio_dir) / plan.split / f"{plan.utt_id}.wav"


def _write_wav(path: Path, wave: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)  # readers never see half a file; an interrupted run leaves no wav


def _render_batch(args: tuple[list[UttPlan], str, bool]) -> list[dict]:
    """Worker: render a batch of same-voice utterances to wavs; one status per plan, never raises."""
    plans, audio_dir, reuse = args
    statuses, todo = [], []
    for plan in plans:
        path = wav_path(audio_dir, plan)
        st = {"utt_id": plan.utt_id, "engine": VOICES[plan.voice]["engine"], "path": str(path.resolve()),
              "error": None, "duration": 0.0, "seconds": 0.0, "reused": False}
        statuses.append(st)
        if reuse and path.is_file():
            try:
                info = sf.info(str(path))
                st.update(duration=info.frames / info.samplerate, reused=True)
                continue
            except (RuntimeError, sf.LibsndfileError):
                pass  # unreadable leftover: make it again
        todo.append((plan, path, st))
    if not todo:
        return statuses
    t0 = time.perf_counter()
    try:
        waves = synthesize_batch([(p.text, p.rate, p.pitch, p.timbre) for p, _, _ in todo], todo[0][0].voice)
    except Exception as e:  # a worker must report, not die: every item gets the error
        waves = [SynthesisError(f"{type(e).__name__}: {e}")] * len(todo)
    synth_s = time.perf_counter() - t0  # TTS (+ sox) only; noise and writing are not counted
    for (plan, path, st), wave in zip(todo, waves):
        try:
            if isinstance(wave, Exception):
                raise wave
            wave = finish_utterance(plan, wave)
            _write_wav(path, wave)
            st["duration"] = len(wave) / SAMPLE_RATE
        except (SynthesisError, OSError, ValueError, RuntimeError) as e:
            st["error"] = f"{type(e).__name__}: {e}"
    # batch time shared out by duration, so per-engine totals stay exact
    total = sum(st["duration"] for _, _, st in todo)
    for _, _, st in todo:
        st["seconds"] = synth_s * (st["duration"] / total if total else 1.0 / len(todo))
    return statuses


def make_batches(plans: Sequence[UttPlan], batch_size: int) -> list[list[UttPlan]]:
    """Group plans by voice (keeping plan order) into batches of at most ``batch_size``."""
    by_voice: dict[str, list[UttPlan]] = {}
    for p in plans:
        by_voice.setdefault(p.voice, []).append(p)
    return [ps[i:i + batch_size] for ps in by_voice.values() for i in range(0, len(ps), batch_size)]


def synthesize_corpus(plans: Sequence[UttPlan], audio_dir: str | os.PathLike, nj: int = 2,
                      reuse_existing: bool = True, progress: bool = True,
                      batch_size: int = 16) -> tuple[list[dict], dict]:
    """Render every planned utterance in ``nj`` processes, ``batch_size`` same-voice utterances
    per task (one festival start-up per batch).

    Returns:
        ``(statuses, timing)``: one status dict per plan (``utt_id``, ``path``, ``duration``,
        ``error`` or ``None``, ``seconds`` of synthesis, ``reused``), in plan order; and
        ``timing`` with the wall time and, per engine, audio seconds, synthesis seconds (summed
        over processes) and their ratio (seconds of audio per second of one process).
    """
    jobs = [(batch, str(audio_dir), reuse_existing) for batch in make_batches(plans, batch_size)]
    t0 = time.perf_counter()
    by_id: dict[str, dict] = {}
    bar = tqdm(total=len(plans), desc="synthesis", unit="utt", disable=not progress, mininterval=2.0)
    if nj <= 1:
        results: Iterable[list[dict]] = map(_render_batch, jobs)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(nj)
        results = pool.imap_unordered(_render_batch, jobs)
    try:
        for batch_statuses in results:
            for st in batch_statuses:
                by_id[st["utt_id"]] = st
            bar.update(len(batch_statuses))
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    wall = time.perf_counter() - t0
    statuses = [by_id[p.utt_id] for p in plans]
    per_engine: dict[str, dict] = {}
    for st in statuses:
        if st["error"] is None and not st["reused"]:
            e = per_engine.setdefault(st["engine"], {"utterances": 0, "audio_s": 0.0, "synth_s": 0.0})
            e["utterances"] += 1
            e["audio_s"] += st["duration"]
            e["synth_s"] += st["seconds"]
    for e in per_engine.values():
        e["audio_s"] = round(e["audio_s"], 1)
        e["synth_s"] = round(e["synth_s"], 1)
        e["audio_s_per_process_s"] = round(e["audio_s"] / e["synth_s"], 1) if e["synth_s"] else None
    synthesized = sum(e["audio_s"] for e in per_engine.values())
    timing = {
        "wall_s": round(wall, 1),
        "nj": nj,
        "synthesized_utterances": sum(e["utterances"] for e in per_engine.values()),
        "reused_utterances": sum(st["reused"] for st in statuses),
        "audio_s_per_wall_s": round(synthesized / wall, 1) if wall > 0 and synthesized else None,
        "per_engine": per_engine,
    }
    return statuses, timing


def write_data_dirs(plans: Sequence[UttPlan], statuses: Sequence[dict], data_dir: str | os.PathLike) -> dict:
    """Write one Kaldi data dir per split from the utterances that rendered; returns hours per split.

    Also writes ``<data_dir>/local/utt_info/<split>.tsv`` (conditions per utterance).
    """
    data_dir = Path(data_dir)
    ok = {st["utt_id"]: st for st in statuses if st["error"] is None}
    summary = {}
    for split in sorted({p.split for p in plans}):
        split_plans = [p for p in plans if p.split == split and p.utt_id in ok]
        dd = DataDir(
            wav_scp={p.utt_id: ok[p.utt_id]["path"] for p in split_plans},
            text={p.utt_id: p.transcript for p in split_plans},
            utt2spk={p.utt_id: p.voice for p in split_plans},
            utt2dur={p.utt_id: ok[p.utt_id]["duration"] for p in split_plans},
        )
        write_data_dir(dd, data_dir / split)
        header = ("utt_id\tverse\tvoice\trate\tpitch_semitones\ttimbre_semitones\tnoise\tsnr_db\tpeak_dbfs"
                  "\tduration_s\n")
        rows = [f"{p.utt_id}\t{p.verse_ref}\t{p.voice}\t{p.rate}\t{p.pitch}\t{p.timbre}\t{p.noise}\t"
                f"{'clean' if p.snr_db is None else p.snr_db}\t{p.peak_db}\t{ok[p.utt_id]['duration']:.3f}\n"
                for p in sorted(split_plans, key=lambda p: p.utt_id)]
        atomic_write_text(data_dir / "local" / "utt_info" / f"{split}.tsv", header + "".join(rows))
        hours = sum(ok[p.utt_id]["duration"] for p in split_plans) / 3600
        summary[split] = {
            "utterances": len(split_plans),
            "hours": round(hours, 3),
            "voices": sorted(utt2spk_to_spk2utt(dd.utt2spk)),
            "words": sum(len(p.transcript.split()) for p in split_plans),
        }
    return summary
