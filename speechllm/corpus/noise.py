"""Additive generated noise at a chosen SNR, reproducible from a seeded generator.

Noise colours are made by shaping white Gaussian noise in the frequency domain: the power
spectrum falls as ``1/f^alpha`` with ``alpha`` 0 (white), 1 (pink) or 2 (brown). Below
:data:`LOW_CUTOFF_HZ` the spectrum is held flat (and DC is removed) so that brown noise does
not put most of its power at frequencies a filterbank never sees.

SNR is measured against the *active* speech level: the mean power of the 20 ms frames that are
within :data:`ACTIVE_RANGE_DB` of the loudest frame. TTS output has leading/trailing silence,
and whole-signal power would make the audible SNR depend on how long those pauses are.
"""
from __future__ import annotations

import numpy as np

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
LOW_CUTOFF_HZ = 20.0
ACTIVE_RANGE_DB = 40.0
FRAME_S = 0.02


def colored_noise(kind: str, num_samples: int, rng: np.random.Generator,
                  sample_rate: int = 16000) -> np.ndarray:
    """``num_samples`` of ``kind`` noise (white, pink or brown) with unit RMS, float32."""
    if kind not in NOISE_COLOURS:
        raise ValueError(f"unknown noise kind '{kind}'; choose from {sorted(NOISE_COLOURS)}")
    if num_samples <= 0:
        return np.zeros(0, dtype=np.float32)
    white = rng.standard_normal(num_samples)
    alpha = NOISE_COLOURS[kind]
    if alpha == 0.0:
        noise = white
    else:
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples, d=1.0 / sample_rate)
        spec *= np.maximum(freqs, LOW_CUTOFF_HZ) ** (-alpha / 2.0)  # amplitude ~ f^(-alpha/2)
        spec[0] = 0.0
        noise = np.fft.irfft(spec, n=num_samples)
    rms = np.sqrt(np.mean(noise ** 2))
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def active_power(x: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean power of the frames within :data:`ACTIVE_RANGE_DB` of the loudest frame."""
    x = np.asarray(x, dtype=np.float64)
    frame = max(1, int(FRAME_S * sample_rate))
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x ** 2)) if len(x) else 0.0
    powers = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    peak = powers.max()
    if peak <= 0:
        return 0.0
    return float(powers[powers >= peak * 10 ** (-ACTIVE_RANGE_DB / 10)].mean())


def measure_snr(speech: np.ndarray, noise: np.ndarray, sample_rate: int = 16000) -> float:
    """SNR in dB of ``speech`` (active level) over ``noise`` (whole-signal power)."""
    return 10.0 * np.log10(active_power(speech, sample_rate) / np.mean(np.asarray(noise, np.float64) ** 2))


def add_noise(speech: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator,
              sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Add ``kind`` noise to ``speech`` at ``snr_db``; returns ``(noisy, noise)`` (float32).

    The noise is scaled so that :func:`measure_snr` of ``(speech, noise)`` equals ``snr_db``.
    Silent input is returned unchanged with zero noise.
    """
    speech = np.asarray(speech, dtype=np.float32)
    p_speech = active_power(speech, sample_rate)
    if p_speech <= 0:
        return speech.copy(), np.zeros_like(speech)
    noise = colored_noise(kind, len(speech), rng, sample_rate)
    noise *= np.float32(np.sqrt(p_speech / 10 ** (snr_db / 10.0)))  # unit-RMS noise -> target power
    return speech + noise, noise
