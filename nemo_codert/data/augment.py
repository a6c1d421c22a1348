"""Acoustic degradation for the offline corpus: simulated reverberation and additive noise, seeded per utterance.

Clean eSpeak NG speech is easy; the benchmark corpus (``benchmarks/paper_table.py``) needs conditions where a bigger
encoder has something to learn that a small one finds hard. Nothing here is downloaded: room impulse responses are
synthesised (a direct path followed by an exponentially decaying diffuse tail whose decay gives the asked RT60, the
usual statistical room model), and noise is coloured Gaussian noise (white, pink or brown, i.e. power ~ 1/f^k for
k = 0, 1, 2) mixed at an asked signal-to-noise ratio.

Every random choice comes from the ``numpy.random.Generator`` the caller passes, so one seed gives one corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["Augmentation", "add_noise", "coloured_noise", "reverberate", "room_impulse_response"]

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


@dataclass(frozen=True)
class Augmentation:
    """How often and how hard utterances are degraded. Ranges are sampled uniformly per utterance."""

    reverb_prob: float = 0.5
    rt60: Tuple[float, float] = (0.2, 0.8)  # seconds
    noise_prob: float = 0.8
    snr_db: Tuple[float, float] = (5.0, 25.0)

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("rt60", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"augment.{name}: lower bound {lo} exceeds upper bound {hi}")
        if self.rt60[0] <= 0:
            raise ValueError(f"augment.rt60 must be positive seconds, got {self.rt60}")

    def draw(self, rng: np.random.Generator) -> Dict[str, Optional[float | str]]:
        """One utterance's degradation: ``{"rt60": s or None, "snr_db": dB or None, "noise": colour or None}``."""
        reverb = rng.random() < self.reverb_prob
        noise = rng.random() < self.noise_prob
        return {
            "rt60": round(float(rng.uniform(*self.rt60)), 3) if reverb else None,
            "snr_db": round(float(rng.uniform(*self.snr_db)), 2) if noise else None,
            "noise": str(rng.choice(sorted(NOISE_COLOURS))) if noise else None,
        }


def room_impulse_response(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic RIR: unit direct path, then Gaussian reflections decaying by 60 dB over ``rt60`` seconds.

    The diffuse tail starts a few ms after the direct path (the first reflections) and its energy relative to the
    direct path grows with RT60, as in real rooms: a long RT60 both smears and colours the speech.
    """
    length = max(1, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    decay = np.exp(-6.9078 * t / rt60)  # amplitude: 60 dB down (ln 1000) at t = rt60
    tail = rng.standard_normal(length) * decay
    tail[: int(0.003 * sample_rate)] = 0.0  # the first reflections arrive after the direct sound
    # Direct-to-reverberant energy ratio falls as the room gets more reverberant (~ +3 dB at 0.2 s, ~ -6 dB at 1 s).
    drr_db = 3.0 - 11.0 * (rt60 - 0.2)
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-12))
    rir = tail
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverberate(audio: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``audio`` convolved with a synthetic RIR, same length and peak level as the input."""
    from scipy.signal import fftconvolve

    if audio.size == 0:
        return audio
    wet = fftconvolve(audio, room_impulse_response(rt60, sample_rate, rng))[: audio.size]
    peak_in, peak_out = float(np.abs(audio).max()), float(np.abs(wet).max())
    return (wet * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def coloured_noise(num_samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power Gaussian noise whose power spectrum falls as 1/f^k (white k=0, pink k=1, brown k=2)."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"noise colour {colour!r} is not one of {sorted(NOISE_COLOURS)}")
    white = rng.standard_normal(num_samples)
    k = NOISE_COLOURS[colour]
    if k == 0.0 or num_samples < 2:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.arange(spectrum.size, dtype=np.float64)
        f[0] = 1.0
        spectrum[0] = 0.0  # no DC: its power would count towards the SNR without being heard
        noise = np.fft.irfft(spectrum / f ** (k / 2), n=num_samples)
    # Unit power (mean square), which is what the SNR is defined on.
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, colour: str, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus coloured noise scaled so that speech power / noise power = ``snr_db``."""
    if audio.size == 0:
        return audio
    speech_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise = coloured_noise(audio.size, colour, rng) * np.sqrt(speech_power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)
