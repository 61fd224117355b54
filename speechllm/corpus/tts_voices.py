"""A registry of offline TTS voices (Debian's espeak-ng, festival and flite) and one ``synthesize``.

``VOICES`` is a plain dict: voice id -> engine and settings. Ids use only ``[a-z0-9_]`` so
that they can be speaker ids and utterance-id prefixes (``<voice>-<rest>``) in data dirs.

- ``espeak-ng``: ``{"engine": "espeak-ng", "voice": "<language>+<variant>"}``. The variants
  (``m1``..``m7``, ``f1``..``f5``) change pitch range and formant scaling; the languages
  (``en-us``, ``en-gb``, ``en-gb-scotland``, ``en-gb-x-rp``, ``en-029``) change phonemes and
  intonation. Formant synthesis, 22.05 kHz.
- ``festival``: ``{"engine": "festival", "voice": "<festvox voice>", "method": "diphone"|"hts"}``.
  ``kal_diphone``/``ked_diphone`` are US male diphone voices at 16 kHz;
  ``cmu_us_slt_arctic_hts`` is a US female HMM (HTS) voice at 32 kHz.
- ``flite``: ``{"engine": "flite", "voice": "<flite -lv name>"}``. Flite 2.2 builds in
  ``rms`` (US male) and ``awb`` (Scottish male), statistical parametric (clustergen) voices
  at 16 kHz: two more real speakers of a third synthesis technique. Its ``kal``/``kal16``
  are the same recordings as festival's kal_diphone, the held-out test speaker, and ``slt``
  the same speaker as festival's slt, so they are not registered.

:func:`synthesize` takes engine-neutral controls: ``rate`` is a speed factor (1.0 = the
voice's default, 1.2 = 20% faster), ``pitch`` a shift of F0 in semitones and ``timbre`` a shift
of the formants in semitones (a shorter or longer vocal tract: a new speaker from the same
voice). How each engine realizes rate and pitch:

========================  ========================================  ==================================
engine                    rate                                      pitch
========================  ========================================  ==================================
espeak-ng                 ``-s round(175 * rate)`` words/minute     ``-p 50 + 7 * pitch`` (0..99; about
                                                                    7 units per semitone, measured)
festival diphone          voice's ``Duration_Stretch`` / rate       ``int_lr_params`` target F0 mean
                                                                    and std scaled by 2^(pitch/12)
festival hts              hts_engine ``-r rate``                    ``sox pitch 100*pitch`` (this
                                                                    festival ignores hts ``-fm``)
flite                     ``--setf duration_stretch=1/rate``        ``sox pitch 100*pitch`` (clustergen
                                                                    ignores ``int_f0_target_mean``)
========================  ========================================  ==================================

Timbre ``t`` (factor ``a = 2^(t/12)``) is the same for every engine: the engine speaks at rate
``rate / a`` and pitch ``pitch - t``, then ``sox speed a`` resamples the whole signal (formants,
F0 and tempo scale by ``a``), which brings rate and F0 back to the requested ones with the
formants moved. Resampling adds no artifacts, unlike a pitch-shifting (WSOLA) effect.

Output is always 16 kHz mono float32; other rates are converted with ``sox``. Festival runs
as ``festival -b script.scm`` (what ``text2wave`` does internally), one process per batch;
flite starts in milliseconds, so it runs once per utterance.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
SYNTH_TIMEOUT_S = 120

VOICES: dict[str, dict] = {
    # espeak-ng: accent x variant combinations. Variant f4 is used by no training voice.
    "espeak_enus_m1": {"engine": "espeak-ng", "voice": "en-us+m1", "weight": 1.0},
    "espeak_enus_f1": {"engine": "espeak-ng", "voice": "en-us+f1", "weight": 1.0},
    "espeak_enus_m3": {"engine": "espeak-ng", "voice": "en-us+m3", "weight": 1.0},
    "espeak_enus_m7": {"engine": "espeak-ng", "voice": "en-us+m7", "weight": 1.0},
    "espeak_engb_m2": {"engine": "espeak-ng", "voice": "en-gb+m2", "weight": 1.0},
    "espeak_engb_f3": {"engine": "espeak-ng", "voice": "en-gb+f3", "weight": 1.0},
    "espeak_engbrp_f2": {"engine": "espeak-ng", "voice": "en-gb-x-rp+f2", "weight": 1.0},
    "espeak_engbrp_m6": {"engine": "espeak-ng", "voice": "en-gb-x-rp+m6", "weight": 1.0},
    "espeak_engbsc_m4": {"engine": "espeak-ng", "voice": "en-gb-scotland+m4", "weight": 1.0},
    "espeak_en029_f5": {"engine": "espeak-ng", "voice": "en-029+f5", "weight": 1.0},
    "espeak_en029_m5": {"engine": "espeak-ng", "voice": "en-029+m5", "weight": 1.0},
    "espeak_enus_f4": {"engine": "espeak-ng", "voice": "en-us+f4", "weight": 1.0},
    # festival: two diphone voices (one for training, one held out) and one HTS voice.
    # Weight 2: three festival voices against eleven espeak ones would otherwise leave the
    # diphone/HTS sound a small minority of the training data. ked, weight 3, is the only
    # diphone speaker training has: with timbre shifts (synth_corpus.Conditions) it stands in
    # for the many diphone speakers a held-out one (kal) could sound like.
    "festival_ked": {"engine": "festival", "voice": "ked_diphone", "method": "diphone", "weight": 3.0},
    "festival_slt": {"engine": "festival", "voice": "cmu_us_slt_arctic_hts", "method": "hts", "weight": 2.0},
    "festival_kal": {"engine": "festival", "voice": "kal_diphone", "method": "diphone", "weight": 2.0},
    # flite: two real male speakers the other engines lack (kal, the test speaker, is male:
    # training had only ked as a real male voice). Weight 1.5 each.
    "flite_rms": {"engine": "flite", "voice": "rms", "weight": 1.5},
    "flite_awb": {"engine": "flite", "voice": "awb", "weight": 1.5},
}

# The mini_synth test voices, never used for train or dev: an espeak variant (f4) no training
# voice uses, with an accent (en-us) that training covers; and a festival diphone voice
# (kal) whose technique training covers with another speaker (ked). Unseen speakers, seen
# synthesis methods: a fair test that a small model can pass. Holding out the only HTS
# voice or a whole accent would test something the training data cannot teach.
HELD_OUT_VOICES: tuple[str, ...] = ("espeak_enus_f4", "festival_kal")



def voice_split(test_voices: Sequence[str] = HELD_OUT_VOICES) -> dict[str, list[str]]:
    """Voices per split: test uses only ``test_voices``; train and dev use all the others
    (dev = training voices, so that model selection never hears a test voice).

    Raises:
        KeyError: a test voice that is not in :data:`VOICES`.
    """
    unknown = [v for v in test_voices if v not in VOICES]
    if unknown:
        raise KeyError(f"unknown voice(s) {unknown}; known: {sorted(VOICES)}")
    train = [v for v in VOICES if v not in test_voices]
    return {"train": train, "dev": list(train), "test": list(test_voices)}


ENGINE_COMMANDS = {"espeak-ng": "espeak-ng", "festival": "festival", "flite": "flite"}


class SynthesisError(RuntimeError):
    """A TTS or sox command failed or produced unusable audio; the message names the voice."""


def engine_available(engine: str) -> bool:
    """True when the engine's command (and sox, needed for resampling) is on PATH."""
    return shutil.which(ENGINE_COMMANDS[engine]) is not None and shutil.which("sox") is not None


def festival_voice_installed(voice: str) -> bool:
    """True when a festvox voice directory named ``voice`` exists in a standard location."""
    roots = [Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")]
    return any((root / lang / voice).is_dir() for root in roots if root.is_dir() for lang in os.listdir(root))


def flite_voice_installed(voice: str) -> bool:
    """True when ``flite -lv`` lists ``voice`` (flite's voices are compiled in)."""
    proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True)
    return voice in proc.stdout.split()


# Engines whose voices are installed apart from the engine: engine -> check of a voice name.
VOICE_INSTALLED = {"festival": festival_voice_installed, "flite": flite_voice_installed}


def voice_available(voice_id: str) -> tuple[bool, str]:
    """``(ok, reason)``: whether ``voice_id`` can be synthesized here, and why not."""
    spec = VOICES[voice_id]
    if not engine_available(spec["engine"]):
        return False, f"{ENGINE_COMMANDS[spec['engine']]} or sox not installed"
    installed = VOICE_INSTALLED.get(spec["engine"])
    if installed is not None and not installed(spec["voice"]):
        return False, f"{spec['engine']} voice {spec['voice']} not installed"
    return True, ""


def engine_versions() -> dict[str, str]:
    """Version strings of the engines and sox, for corpus_info.yaml (``"missing"`` if absent):
    the first output line that names a version (flite prints a copyright line first), else
    the first line."""
    def version_line(command: str) -> str:
        if shutil.which(command) is None:
            return "missing"
        proc = subprocess.run([command, "--version"], capture_output=True, text=True)
        lines = [ln.strip() for ln in (proc.stdout or proc.stderr).splitlines() if ln.strip()]
        return next((ln for ln in lines if "version" in ln.lower()), lines[0] if lines else "unknown")

    return {name: version_line(command) for name, command in {**ENGINE_COMMANDS, "sox": "sox"}.items()}


def _run(cmd: list[str], voice_id: str, stdin_text: str | None = None) -> None:
    try:
        proc = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{voice_id}: '{cmd[0]}' timed out after {SYNTH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no stderr"]
        raise SynthesisError(f"{voice_id}: '{cmd[0]}' exited with {proc.returncode}: {tail[0]}")


def tts_input_text(text: str) -> str:
    """Text as handed to the engines: one line, no leading dash (read as an option by some)."""
    return re.sub(r"\s+", " ", text).strip().lstrip("-")


def _espeak_cmd(spec: dict, rate: float, pitch: float, out: Path) -> list[str]:
    wpm = int(round(min(max(175 * rate, 80), 450)))
    p = int(round(min(max(50 + 7 * pitch, 0), 99)))
    return ["espeak-ng", "-v", spec["voice"], "-s", str(wpm), "-p", str(p), "-w", str(out), "--stdin"]


def _flite_cmd(spec: dict, rate: float, text: str, out: Path) -> list[str]:
    return ["flite", "-voice", spec["voice"], "--setf", f"duration_stretch={1.0 / rate:.4f}",
            "-t", tts_input_text(text), "-o", str(out)]


def _pitch_by_sox(spec: dict) -> bool:
    """Voices whose engine ignores an F0 target: their pitch shift is done by sox (module table)."""
    return spec["engine"] == "flite" or spec.get("method") == "hts"


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_script(spec: dict, items: Sequence[tuple[str, float, float]], outs: Sequence[Path]) -> str:
    """A festival batch script: per item, select the voice (which resets its defaults), apply
    rate and pitch relative to those defaults, synthesize and save a RIFF wav."""
    lines = []
    for (text, rate, pitch), out in zip(items, outs):
        lines.append(f"(voice_{spec['voice']})")
        if spec["method"] == "hts":
            lines.append(f"(set! hts_engine_params (append hts_engine_params '((\"-r\" {rate:.4f}))))")
        else:
            factor = 2.0 ** (pitch / 12.0)
            lines.append(f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {rate:.4f}))")
            # assoc finds the first match: prepending the scaled values overrides the defaults
            lines.append(
                "(set! int_lr_params (append (list "
                f"(list 'target_f0_mean (* {factor:.5f} (cadr (assoc 'target_f0_mean int_lr_params)))) "
                f"(list 'target_f0_std (* {factor:.5f} (cadr (assoc 'target_f0_std int_lr_params))))) "
                "int_lr_params))"
            )
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(tts_input_text(text))})) "
                     f"{_scheme_string(str(out))} 'riff)")
    return "\n".join(lines) + "\n"


def _to_16k(raw: Path, tmp: Path, voice_id: str, sox_pitch: float | None, speed: float = 1.0) -> np.ndarray:
    """Read an engine's wav as 16 kHz mono float32, through sox (pitch shift in semitones,
    then resampling by ``speed``) when it is not that already."""
    if not raw.is_file() or raw.stat().st_size <= 44:
        raise SynthesisError(f"{voice_id}: no audio written to {raw.name}")
    info = sf.info(str(raw))
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or sox_pitch or speed != 1.0:
        out = tmp / f"{raw.stem}.16k.wav"
        sox = ["sox", str(raw), "-c", "1", "-b", "16", str(out)]
        if sox_pitch:
            sox += ["pitch", f"{100 * sox_pitch:.0f}"]
        if speed != 1.0:
            sox += ["speed", f"{speed:.5f}"]
        _run(sox + ["rate", "-h", str(SAMPLE_RATE)], voice_id)
        raw = out
    wave, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    wave = np.ascontiguousarray(wave[:, 0])
    if sr != SAMPLE_RATE or wave.size == 0 or not np.any(wave):
        raise SynthesisError(f"{voice_id}: unusable audio (sr={sr}, {wave.size} samples)")
    return wave


def _engine_controls(rate: float, pitch: float, timbre: float) -> tuple[float, float, float]:
    """``(engine rate, engine pitch, sox speed)`` that realize rate, pitch and timbre (module doc)."""
    if abs(timbre) < 1e-3:
        return rate, pitch, 1.0
    speed = 2.0 ** (timbre / 12.0)
    return rate / speed, pitch - timbre, speed


def synthesize_batch(items: Sequence[tuple[str, float, float, float]], voice_id: str
                     ) -> list[np.ndarray | SynthesisError]:
    """Speak several ``(text, rate, pitch, timbre)`` items with one voice (see :func:`synthesize`).

    Festival runs once for the whole batch (its start-up, ~0.12 s, would otherwise dominate:
    ~10x faster for diphone voices); an item the batch did not produce is retried alone, so a
    bad text fails only itself. Returns, per item, the samples or the :class:`SynthesisError`.
    """
    spec = VOICES[voice_id]
    results: list[np.ndarray | SynthesisError] = []
    with tempfile.TemporaryDirectory(prefix="tts_") as tmp_name:
        tmp = Path(tmp_name)
        raws = [tmp / f"item{i}.wav" for i in range(len(items))]
        controls = [_engine_controls(rate, pitch, timbre) for _, rate, pitch, timbre in items]
        engine_items = [(text, r, p) for (text, *_), (r, p, _) in zip(items, controls)]
        if spec["engine"] == "festival" and len(items) > 1 and all(tts_input_text(t) for t, *_ in items):
            script = tmp / "batch.scm"
            script.write_text(_festival_script(spec, engine_items, raws), encoding="utf-8")
            try:
                _run(["festival", "-b", str(script)], voice_id)
            except SynthesisError:
                pass  # items without output are retried one by one below
        for (text, rate, pitch), (_, _, speed), raw in zip(engine_items, controls, raws):
            sox_pitch = pitch if _pitch_by_sox(spec) and abs(pitch) > 1e-3 else None
            try:
                if not tts_input_text(text):
                    raise SynthesisError(f"{voice_id}: empty text")
                if not raw.is_file():
                    if spec["engine"] == "espeak-ng":
                        _run(_espeak_cmd(spec, rate, pitch, raw), voice_id, stdin_text=tts_input_text(text) + "\n")
                    elif spec["engine"] == "festival":
                        script = tmp / f"{raw.stem}.scm"
                        script.write_text(_festival_script(spec, [(text, rate, pitch)], [raw]), encoding="utf-8")
                        _run(["festival", "-b", str(script)], voice_id)
                    elif spec["engine"] == "flite":
                        _run(_flite_cmd(spec, rate, text, raw), voice_id)
                    else:
                        raise SynthesisError(f"{voice_id}: unknown engine {spec['engine']}")
                results.append(_to_16k(raw, tmp, voice_id, sox_pitch, speed))
            except SynthesisError as e:
                results.append(SynthesisError(f"{e} (text '{text[:50]}')"))
    return results


def synthesize(text: str, voice_id: str, rate: float = 1.0, pitch: float = 0.0, timbre: float = 0.0) -> np.ndarray:
    """Speak ``text`` with voice ``voice_id``; returns 16 kHz mono float32 samples.

    Args:
        text: the sentence, with its punctuation (engines use it for phrasing).
        voice_id: a key of :data:`VOICES`.
        rate: speed factor, 1.0 = the voice's default (see the module table).
        pitch: F0 shift in semitones, 0 = the voice's default.
        timbre: formant shift in semitones, 0 = the voice's own (module doc).

    Raises:
        KeyError: unknown voice id.
        SynthesisError: the engine or sox failed, or the audio is empty.
    """
    result = synthesize_batch([(text, rate, pitch, timbre)], voice_id)[0]
    if isinstance(result, SynthesisError):
        raise result
    return result
