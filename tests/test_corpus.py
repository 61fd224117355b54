"""Corpus building blocks: TTS voices, generated noise, KJV verse selection, utterance plans."""
import shutil

import numpy as np
import pytest

from speechllm.corpus.kjv_text import DEFAULT_BOOKS, dump_kjv, filter_verses, parse_bible_output, select_verses
from speechllm.corpus.noise import NOISE_COLOURS, add_noise, colored_noise, measure_snr
from speechllm.corpus.synth_corpus import plan_corpus, plan_digest
from speechllm.corpus.tts_voices import (HELD_OUT_VOICES, SAMPLE_RATE, VOICES, SynthesisError, engine_versions,
                                         synthesize, synthesize_batch, voice_available, voice_split)

SENTENCE = "The LORD is my shepherd; I shall not want."


@pytest.fixture(scope="module")
def kjv_pool():
    if shutil.which("bible") is None:
        pytest.skip("bible (Debian package bible-kjv) not installed")
    return filter_verses(dump_kjv(), DEFAULT_BOOKS, 5, 18)


# --- voices -----------------------------------------------------------------------------
def test_registry_has_at_least_eight_voices_from_three_engines():
    assert len(VOICES) >= 8
    assert {spec["engine"] for spec in VOICES.values()} == {"espeak-ng", "festival", "flite"}
    assert all(v.replace("_", "").isalnum() and v.islower() for v in VOICES)  # safe as speaker ids
    # flite's kal voices are festival kal's recordings: the held-out speaker must not train
    assert not {spec["voice"] for spec in VOICES.values() if spec["engine"] == "flite"} & {"kal", "kal16"}


def test_engine_versions_name_every_engine():
    versions = engine_versions()
    assert set(versions) == {"espeak-ng", "festival", "flite", "sox"}
    if shutil.which("flite"):
        assert "version" in versions["flite"]  # not the copyright line flite prints first


@pytest.mark.parametrize("voice", sorted(VOICES))
def test_each_voice_speaks_16k_mono_non_silent_audio(voice):
    ok, why = voice_available(voice)
    if not ok:
        pytest.skip(f"voice {voice} unavailable: {why}")
    wave = synthesize(SENTENCE, voice, rate=1.1, pitch=1.0)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 1.0 < len(wave) / SAMPLE_RATE < 8.0
    assert np.sqrt(np.mean(wave ** 2)) > 1e-3


@pytest.mark.parametrize("voice", ["espeak_enus_m1", "flite_rms"])
def test_rate_changes_duration(voice):
    ok, why = voice_available(voice)
    if not ok:
        pytest.skip(why)
    slow, fast = synthesize(SENTENCE, voice, rate=0.8), synthesize(SENTENCE, voice, rate=1.25)
    assert len(slow) > 1.3 * len(fast)


def _median_f0(wave: np.ndarray) -> float:
    """Median F0 (Hz) of the loud frames, from the autocorrelation peak in 60..400 Hz."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 1024)[::256]
    frames = frames[np.sqrt((frames ** 2).mean(1)) > 0.3 * np.sqrt((frames ** 2).mean(1)).max()]
    lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    f0 = []
    for f in frames - frames.mean(1, keepdims=True):
        ac = np.correlate(f, f, "full")[1023:]
        f0.append(SAMPLE_RATE / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


def test_flite_pitch_is_shifted_by_sox():
    ok, why = voice_available("flite_rms")
    if not ok:
        pytest.skip(why)
    plain, higher = synthesize(SENTENCE, "flite_rms"), synthesize(SENTENCE, "flite_rms", pitch=4.0)
    assert abs(len(higher) / len(plain) - 1) < 0.02  # sox pitch keeps the tempo
    assert 1.12 < _median_f0(higher) / _median_f0(plain) < 1.4  # +4 semitones = x1.26


def _mean_spectral_centroid(wave: np.ndarray) -> float:
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    loud = mag.sum(1) > 0.1 * mag.sum(1).max()
    return float((mag[loud] @ np.fft.rfftfreq(512, 1 / SAMPLE_RATE)).sum() / mag[loud].sum())


def test_timbre_moves_formants_but_keeps_duration():
    ok, why = voice_available("festival_ked")
    if not ok:
        pytest.skip(why)
    plain, higher = (synthesize(SENTENCE, "festival_ked", timbre=t) for t in (0.0, 3.0))
    assert abs(len(higher) / len(plain) - 1) < 0.1  # the engine spoke slower, sox sped it back up
    # +3 semitones = formants x1.19: the spectrum's centre of mass rises by about that much
    assert 1.08 < _mean_spectral_centroid(higher) / _mean_spectral_centroid(plain) < 1.3


def test_batch_failure_is_reported_per_item():
    ok, why = voice_available("festival_ked")
    if not ok:
        pytest.skip(why)
    out = synthesize_batch([(SENTENCE, 1.0, 0.0, 0.0), ("   ", 1.0, 0.0, 0.0), ("Amen.", 1.0, 0.0, 1.5)], "festival_ked")
    assert isinstance(out[1], SynthesisError) and "empty text" in str(out[1])
    assert all(isinstance(w, np.ndarray) and len(w) > 0 for w in (out[0], out[2]))


def test_held_out_voices_are_absent_from_train_and_dev():
    split = voice_split()
    assert set(split["test"]) == set(HELD_OUT_VOICES)
    assert not set(HELD_OUT_VOICES) & (set(split["train"]) | set(split["dev"]))
    engines = {VOICES[v]["engine"] for v in HELD_OUT_VOICES}
    assert engines == {"espeak-ng", "festival"}  # one unseen voice per engine
    with pytest.raises(KeyError):
        voice_split(["no_such_voice"])


# --- noise ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(NOISE_COLOURS))
@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_at_snr_x_measures_x(kind, snr):
    rng = np.random.default_rng(0)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.5) * (t < 2.5)).astype(np.float32)  # silence around
    noisy, noise = add_noise(speech, snr, kind, rng)
    assert np.allclose(noisy - speech, noise, atol=1e-6)
    assert measure_snr(speech, noisy - speech) == pytest.approx(snr, abs=0.05)
    # the SNR refers to the active part: the whole-signal SNR is lower by the silence share
    whole = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert whole == pytest.approx(snr + 10 * np.log10(2 / 3), abs=0.1)


def test_noise_colours_tilt_the_spectrum_and_are_seeded():
    low_share = {}
    for kind in NOISE_COLOURS:
        x = colored_noise(kind, 4 * SAMPLE_RATE, np.random.default_rng(1))
        assert x.dtype == np.float32 and np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        low_share[kind] = power[freqs < 1000].sum() / power.sum()
    assert low_share["white"] < low_share["pink"] < low_share["brown"]
    assert low_share["white"] == pytest.approx(1000 / 8000, abs=0.02)
    a = colored_noise("pink", 1000, np.random.default_rng(7))
    assert np.array_equal(a, colored_noise("pink", 1000, np.random.default_rng(7)))
    assert not np.array_equal(a, colored_noise("pink", 1000, np.random.default_rng(8)))


# --- text -------------------------------------------------------------------------------
def test_parse_bible_output():
    verses = parse_bible_output(["Ge1:1 In the beginning God created the heaven and the earth.",
                                 "", "1Cor13:4 Charity suffereth long, and is kind;"])
    assert [(v.book, v.chapter, v.verse) for v in verses] == [("Ge", 1, 1), ("1Cor", 13, 4)]
    assert verses[1].transcript == "charity suffereth long and is kind"
    assert verses[1].id_part == "1Cor013_004"
    with pytest.raises(ValueError, match="line 1"):
        parse_bible_output(["not a verse"])


def test_verse_selection_is_seeded_disjoint_and_closed_vocabulary(kjv_pool):
    assert all(5 <= len(v.words) <= 18 and v.book in DEFAULT_BOOKS for v in kjv_pool)
    a, stats = select_verses(kjv_pool, 300, 30, 40, seed=3)
    b, _ = select_verses(list(reversed(kjv_pool)), 300, 30, 40, seed=3)
    c, _ = select_verses(kjv_pool, 300, 30, 40, seed=4)
    assert a == b  # same seed, same selection, whatever the pool order
    assert a["test"] != c["test"]
    assert [len(a[s]) for s in ("train", "dev", "test")] == [300, 30, 40]
    refs = {s: {v.ref for v in a[s]} for s in a}
    assert not refs["train"] & refs["dev"] and not refs["train"] & refs["test"] and not refs["dev"] & refs["test"]
    vocab = {w for v in a["train"] for w in v.words}
    assert all(w in vocab for v in a["test"] for w in v.words)
    assert stats["test_oov_words"] == 0 and stats["train_vocab_size"] == len(vocab)


def test_plan_keeps_test_voices_out_of_train_and_is_reproducible(kjv_pool):
    verses, _ = select_verses(kjv_pool, 40, 10, 10, seed=1)
    num = {"train": 60, "dev": 10, "test": 10}  # train reuses verses with other voices
    plans = plan_corpus(verses, num, voice_split(), seed=1)
    by_split = {s: [p for p in plans if p.split == s] for s in num}
    assert {s: len(ps) for s, ps in by_split.items()} == num
    assert not {p.voice for p in by_split["train"] + by_split["dev"]} & set(HELD_OUT_VOICES)
    test_voices = [p.voice for p in by_split["test"]]
    assert sorted(set(test_voices)) == sorted(HELD_OUT_VOICES)
    assert test_voices.count(HELD_OUT_VOICES[0]) == test_voices.count(HELD_OUT_VOICES[1])
    assert len({p.utt_id for p in plans}) == len(plans)
    assert all(p.utt_id.startswith(p.voice + "-") for p in plans)
    assert plan_digest(plans) == plan_digest(plan_corpus(verses, num, voice_split(), seed=1))
    assert plan_digest(plans) != plan_digest(plan_corpus(verses, num, voice_split(), seed=2))
    # held-out voices are tested as they are; training voices get timbre shifts
    assert all(p.timbre == 0.0 for p in by_split["test"])
    train_timbres = [p.timbre for p in by_split["train"]]
    assert all(-2.0 <= t <= 2.0 for t in train_timbres) and len(set(train_timbres)) > 10
