"""Derived voices: warped copies of training eSpeak variants, rendered through an overlay of eSpeak's data."""

import json

import numpy as np
import pytest

from nemo_codert.data import espeak, voices
from nemo_codert.data.synth import build_corpus

_TEXT = "the quick brown fox jumps over the lazy dog"


def _centroid(audio: np.ndarray) -> float:
    """Mean spectral centroid (Hz) of 32 ms frames: where the formants sit, on average."""
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)).mean(0)
    return float((spectrum * np.fft.rfftfreq(512, 1 / espeak.SAMPLE_RATE)).sum() / spectrum.sum())


def _fields(text: str, key: str) -> dict:
    return {
        tuple(line.split()[:2]) if key == "formant" else key: line.split()
        for line in text.splitlines()
        if line.split()[:1] == [key]
    }


def test_derived_voices_warp_formants_and_pitch_of_their_base_within_bounds_and_keep_the_rest():
    derived = voices.derive_voices(["m3", "klatt3"], per_base=2, seed=0)
    assert sorted(derived) == ["klatt3_d0", "klatt3_d1", "m3_d0", "m3_d1"]
    assert voices.derive_voices(["m3", "klatt3"], per_base=2, seed=0) == derived  # deterministic
    assert voices.derive_voices(["m3", "klatt3"], per_base=2, seed=1) != derived
    assert "klatt 3" in derived["klatt3_d1"]  # the base's synthesiser and voice quality stay
    m3 = (voices._shipped_data() / "voices" / "!v" / "m3").read_text()
    base_pitch = [int(x) for x in _fields(m3, "pitch")["pitch"][1:3]]
    for name in ("m3_d0", "m3_d1"):
        text = derived[name]
        assert f"name {name}" in text and "name male3" not in text
        pitch = [int(x) for x in _fields(text, "pitch")["pitch"][1:3]]
        for got, was in zip(pitch, base_pitch):
            assert 0.85 * was - 1 <= got <= 1.2 * was + 1
        base_formants, formants = _fields(m3, "formant"), _fields(text, "formant")
        for n in ("1", "2", "3", "4", "5"):
            was, got = base_formants[("formant", n)], formants[("formant", n)]
            assert 0.88 * 0.96 * int(was[2]) - 1 <= int(got[2]) <= 1.12 * 1.04 * int(was[2]) + 1
            assert got[3:] == was[3:]  # heights and widths untouched


def test_a_derived_variant_is_what_espeak_renders(tmp_path):
    """eSpeak falls back to its default voice without an error for a variant it cannot find: the overlay must make
    the derived files the ones it reads. Formants at 70 % / 130 % move the spectrum well past eSpeak's own jitter."""
    lines = "".join(f"formant {n} {{f}} 100 100\n" for n in range(1, 6))
    warped = {
        "low": "language variant\nname low\n" + lines.format(f=70),
        "high": "language variant\nname high\n" + lines.format(f=130),
    }
    root = str(voices.write_overlay(warped, ["m3"], tmp_path / "overlay"))
    base = _centroid(espeak.synthesize(_TEXT, "en-us+m3", 170, 50, root))
    assert _centroid(espeak.synthesize(_TEXT, "en-us+low", 170, 50, root)) < 0.85 * base
    assert _centroid(espeak.synthesize(_TEXT, "en-us+high", 170, 50, root)) > 1.1 * base
    # Back on eSpeak's own data the shipped variant renders as before (the engine re-initialises).
    assert _centroid(espeak.synthesize(_TEXT, "en-us+m3", 170, 50)) == pytest.approx(base, rel=0.05)


def test_an_overlay_with_more_voices_than_espeak_lists_is_refused(tmp_path):
    too_many = {f"v{i}": "language variant\n" for i in range(340)}
    with pytest.raises(ValueError, match="eSpeak lists at most 349 voices"):
        voices.write_overlay(too_many, ["m3"], tmp_path / "overlay")


def test_a_corpus_with_derived_voices_keeps_test_voices_unseen(tmp_path):
    corpus = build_corpus(
        tmp_path / "corpus",
        hours=0.01,
        dev_hours=0.003,
        test_hours=0.003,
        vocab_size=32,
        num_workers=1,
        derived_voices=2,
    )
    meta = json.loads((corpus.root / "corpus.json").read_text())
    assert meta["derived_voices"] == 2
    manifests = {
        s: [json.loads(x) for x in getattr(corpus, f"{s}_manifest").read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    train_voices = {e["voice"].split("+", 1)[1] for e in manifests["train"]}
    test_voices = {e["voice"].split("+", 1)[1] for e in manifests["test"]}
    assert any("_d" in v for v in train_voices), "no derived voice drawn"
    recorded = {p.name for p in (corpus.root / "voices").iterdir()}
    assert {v for v in train_voices if "_d" in v} <= recorded
    # Neither a test voice nor a voice derived from one was trained on.
    bases = {name.rsplit("_d", 1)[0].replace("-", " ") for name in recorded}
    assert not test_voices & (train_voices | bases)
    assert not (corpus.root / ".espeak").exists()  # the overlay is build scaffolding
    # A corpus.json from before derived voices existed reads as derived_voices 0: reused, not rebuilt or refused.
    del meta["derived_voices"]
    (corpus.root / "corpus.json").write_text(json.dumps(meta))
    again = build_corpus(corpus.root, hours=0.01, dev_hours=0.003, test_hours=0.003, vocab_size=32, num_workers=1)
    assert again == corpus
