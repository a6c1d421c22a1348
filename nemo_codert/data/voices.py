"""Speakers eSpeak NG does not ship: training voice variants with their vocal tract and pitch warped.

Why: the corpus's speakers are eSpeak's voice variants (``en-us+f3``...), 78 of them in train and 20 held out for
test. With so few speakers a model learns the training voices rather than speech, and a larger model more so: the
held-out voices cost every model far more than unseen sentences do, and the 3x wider teacher no longer led its student
on them (issue 10). Each derived voice is a copy of one *training* variant with its formants F1-F5 scaled by one
vocal-tract factor (as vocal-tract-length normalisation warps frequencies, 0.88-1.12) plus a small per-formant
jitter, and its pitch by another factor: new speakers within what eSpeak renders well, and none built from a test
voice, so the test split's voices stay unseen.

eSpeak reads variants only from its data directory, which ships read-only inside the ``espeakng-loader`` wheel; the
derived variants go into an *overlay* of it (symlinks to the shipped files beside the new ones), whose parent
directory is what ``nemo_codert.data.espeak.synthesize`` takes as ``data_root``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, Sequence

__all__ = ["derive_voices", "write_overlay"]

_VOCAL_TRACT = (0.88, 1.12)  # one frequency warp per derived voice, applied to every warped formant
_FORMANT_JITTER = 0.04  # and a little per formant, so the warp is not a pure scale of the base voice
_PITCH = (0.85, 1.2)  # factor on the base voice's pitch (base and range, Hz)
_WARPED_FORMANTS = (1, 2, 3, 4, 5)  # F1-F5; eSpeak's formant 0 and the high 6-8 shape little of the voice
_DEFAULT_PITCH = (82, 118)  # eSpeak's pitch (Hz) for a variant without a pitch line
_DEFAULT_FORMANT = ("100", "100", "100")  # frequency, height, width (percent of the language's) when unset
_ENGLISH = "gmw"  # the eSpeak language family holding en-US
_ESPEAK_VOICE_LIST = 349  # N_VOICES_LIST - 1 in eSpeak NG's voices.c: the most voices it lists


def _shipped_data() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def derive_voices(bases: Sequence[str], per_base: int, seed: int) -> Dict[str, str]:
    """``per_base`` new variants of each shipped variant in ``bases``: name -> eSpeak variant file text.

    Deterministic in (bases, per_base, seed). A derived voice is named ``BASE_dK`` (spaces in the base name become
    hyphens), so a manifest's ``voice`` field says which training voice it came from.
    """
    rng = random.Random(f"{seed}-derived-voices")
    shipped = _shipped_data() / "voices" / "!v"
    derived: Dict[str, str] = {}
    for base in sorted(bases):
        lines = (shipped / base).read_text(errors="replace").splitlines()
        for k in range(per_base):
            name = f"{base.replace(' ', '-')}_d{k}"
            derived[name] = _warp(lines, name, rng)
    return derived


def _warp(lines: Sequence[str], name: str, rng: random.Random) -> str:
    """The variant ``lines`` renamed ``name``, with its F1-F5 frequencies and its pitch scaled by fresh draws."""
    tract = rng.uniform(*_VOCAL_TRACT)
    pitch_scale = rng.uniform(*_PITCH)
    formants = {n: list(_DEFAULT_FORMANT) for n in _WARPED_FORMANTS}
    pitch = _DEFAULT_PITCH
    kept = []
    for line in lines:
        words = line.split()
        if words and words[0] == "formant" and len(words) >= 5 and int(words[1]) in formants:
            formants[int(words[1])] = words[2:]
        elif words and words[0] == "pitch" and len(words) >= 3:
            pitch = (int(words[1]), int(words[2]))
        elif not (words and words[0] == "name"):
            kept.append(line)
    out = kept + [f"name {name}", f"pitch {round(pitch[0] * pitch_scale)} {round(pitch[1] * pitch_scale)}"]
    for n, (freq, *rest) in formants.items():
        scale = tract * rng.uniform(1 - _FORMANT_JITTER, 1 + _FORMANT_JITTER)
        out.append(" ".join(["formant", str(n), str(round(float(freq) * scale)), *rest]))
    return "\n".join(out) + "\n"


def write_overlay(variants: Dict[str, str], bases: Sequence[str], root: Path) -> Path:
    """An eSpeak data directory under ``root`` holding the shipped data, English only, with the shipped variants
    ``bases`` and the derived ``variants``; returns ``root``, the ``data_root`` to synthesise with.

    Shipped files are symlinked, not copied (19 MB). eSpeak lists every voice file it finds, variants first, and stops
    at 349 (``N_VOICES_LIST``) without an error: a list full of variants would silently lose ``en-US`` itself. So
    the overlay holds only the English languages and the variants it is asked for, and refuses more than fit.
    """
    listed = len(bases) + len(variants) + len(list((_shipped_data() / "lang" / _ENGLISH).iterdir()))
    if listed > _ESPEAK_VOICE_LIST:
        raise ValueError(
            f"{len(variants)} derived voices beside {len(bases)} shipped ones: eSpeak lists at most "
            f"{_ESPEAK_VOICE_LIST} voices ({listed} asked); derive fewer voices per variant"
        )
    shipped = _shipped_data()
    data = Path(root) / "espeak-ng-data"
    (data / "lang").mkdir(parents=True)
    for entry in shipped.iterdir():
        if entry.name not in ("voices", "lang"):
            (data / entry.name).symlink_to(entry)
    (data / "lang" / _ENGLISH).symlink_to(shipped / "lang" / _ENGLISH)
    variant_dir = data / "voices" / "!v"
    variant_dir.mkdir(parents=True)
    for name in bases:
        (variant_dir / name).symlink_to(shipped / "voices" / "!v" / name)
    for name, text in variants.items():
        (variant_dir / name).write_text(text)
    return Path(root)
