"""eSpeak NG speech through ctypes, from the ``espeakng-loader`` wheel: nothing is downloaded.

One engine per process, in synchronous mode (the library is not thread-safe, and synchronous output hands the
samples to a callback instead of a sound card), at eSpeak's native 22.05 kHz, resampled to 16 kHz.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import List, Optional

import numpy as np

__all__ = ["SAMPLE_RATE", "synthesize", "voice_variants"]

SAMPLE_RATE = 16000
# eSpeak NG's API constants (speak_lib.h).
_ESPEAK_RATE = 22050  # what espeak_Initialize returns on success: its output sample rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: samples go to the synth callback, espeak_Synth returns when done
_ESPEAK_RATE_PARAMETER = 1  # espeak_PARAMETER espeakRATE: words per minute
_ESPEAK_PITCH_PARAMETER = 3  # espeak_PARAMETER espeakPITCH: 0-100
_POS_CHARACTER = 1  # espeak_POSITION_TYPE of the (unused) start position
_ESPEAK_CHARS_AUTO = 0  # synth flags: text encoding detected (UTF-8 here)
# 22050 Hz -> 16000 Hz is a rational resampling by 320/441.
_RESAMPLE_UP, _RESAMPLE_DOWN = 320, 441
# Variants whose voice is not speech a recogniser should be judged on (whisper, heavy robot/creak effects).
_EXCLUDED_VARIANTS = {"whisper", "whisperf", "croak", "Demonic", "UniRobot", "anikaRobot"}

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_engine: Optional[ctypes.CDLL] = None
_engine_root: Optional[str] = None  # the data directory's parent the engine was initialised with
_chunks: List[np.ndarray] = []


@_SYNTH_CALLBACK
def _collect(wav, num_samples, events):
    if num_samples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    return 0


def _espeak(data_root: Optional[str] = None) -> ctypes.CDLL:
    """This process's engine, reading its data from ``data_root``/espeak-ng-data (the wheel's by default);
    initialised once, and again only when another data directory is asked for."""
    global _engine, _engine_root
    import espeakng_loader

    root = data_root or str(Path(espeakng_loader.get_data_path()).parent)
    if _engine is not None and _engine_root != root:
        _engine.espeak_Terminate()
        _engine = None
    if _engine is None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(root.encode()), 0)
        if rate != _ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise from {root} (returned {rate})")
        lib.espeak_SetSynthCallback(_collect)
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        _engine, _engine_root = lib, root
    return _engine


def synthesize(text: str, voice: str, rate: int, pitch: int, data_root: Optional[str] = None) -> np.ndarray:
    """16 kHz float32 speech of ``text`` in ``voice`` (e.g. ``en-us+f3``) at ``rate`` words/min and ``pitch``;
    ``data_root`` is the parent of an eSpeak data directory with more voices (``nemo_codert.data.voices``)."""
    from scipy.signal import resample_poly

    lib = _espeak(data_root)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
    lib.espeak_SetParameter(_ESPEAK_RATE_PARAMETER, int(rate), 0)
    lib.espeak_SetParameter(_ESPEAK_PITCH_PARAMETER, int(pitch), 0)
    _chunks.clear()
    encoded = text.encode()
    lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_AUTO, None, None)
    lib.espeak_Synchronize()
    audio = np.concatenate(_chunks).astype(np.float32) / 32768.0 if _chunks else np.zeros(0, np.float32)
    return resample_poly(audio, _RESAMPLE_UP, _RESAMPLE_DOWN).astype(np.float32)


def voice_variants() -> List[str]:
    """The shipped eSpeak NG voice variants usable as speakers, sorted."""
    import espeakng_loader

    variants_dir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in variants_dir.iterdir() if p.is_file() and p.name not in _EXCLUDED_VARIANTS)
