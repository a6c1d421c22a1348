"""One utterance of the offline corpus: eSpeak NG speech, optionally degraded, written as 16-bit WAV.

Runs in the corpus builder's worker processes (``nemo_codert.data.synth``), so it imports nothing heavier than
numpy and soundfile: NeMo's import would cost every worker seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from nemo_codert.data.augment import add_noise, reverberate
from nemo_codert.data.espeak import SAMPLE_RATE, synthesize

__all__ = ["RenderJob", "render"]

# Some voice variants overshoot full scale; a louder peak is scaled down to this rather than clipped.
_PEAK = 0.99


@dataclass(frozen=True)
class RenderJob:
    """One utterance to synthesise and write."""

    path: str
    text: str
    voice: str
    rate: int  # words per minute
    pitch: int  # eSpeak's 0-100
    degrade: Optional[Dict] = None  # Augmentation.draw(): rt60, snr_db, noise
    noise_seed: int = 0
    espeak_root: Optional[str] = None  # an eSpeak data overlay with derived voices (nemo_codert.data.voices)


def render(job: RenderJob) -> Tuple[str, float]:
    """Synthesise, degrade and write ``job``; returns (path, duration in seconds)."""
    import soundfile as sf

    audio = synthesize(job.text, job.voice, job.rate, job.pitch, job.espeak_root)
    if job.degrade:
        noise_rng = np.random.default_rng(job.noise_seed)
        if job.degrade["rt60"] is not None:
            audio = reverberate(audio, job.degrade["rt60"], SAMPLE_RATE, noise_rng)
        if job.degrade["snr_db"] is not None:
            audio = add_noise(audio, job.degrade["snr_db"], job.degrade["noise"], noise_rng)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > _PEAK:
        audio *= _PEAK / peak
    sf.write(job.path, audio, SAMPLE_RATE, subtype="PCM_16")
    return job.path, len(audio) / SAMPLE_RATE
