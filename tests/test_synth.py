"""The offline corpus: real eSpeak NG audio, manifests, lhotse cuts and a tokenizer NeMo loads."""

import json
import random

import numpy as np
import pytest
import soundfile as sf

from nemo_codert.data.synth import build_corpus, split_voices


def _manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audio_matches_manifest_and_is_speech(corpus):
    entries = _manifest(corpus.train_manifest)
    assert entries
    for e in entries[:10]:
        info = sf.info(e["audio_filepath"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - e["duration"]) < 1e-3
        audio, _ = sf.read(e["audio_filepath"], dtype="float32")
        rms = float(np.sqrt(np.mean(audio**2)))
        assert 0.01 < rms and np.abs(audio).max() < 1.0, "silent or clipped audio"


def test_test_split_holds_unseen_voices_and_sentences(corpus):
    train, dev, test = (_manifest(m) for m in (corpus.train_manifest, corpus.dev_manifest, corpus.test_manifest))
    assert not {e["voice"] for e in test} & {e["voice"] for e in train}
    assert not {e["text"] for e in test} & {e["text"] for e in train}
    assert not {e["text"] for e in dev} & {e["text"] for e in train}


def test_tokenizer_loads_in_nemo_and_round_trips(corpus):
    from nemo.collections.common.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer(str(corpus.tokenizer_dir / "tokenizer.model"))
    sentence = _manifest(corpus.test_manifest)[0]["text"]
    assert tokenizer.ids_to_text(tokenizer.text_to_ids(sentence)) == sentence


def test_lhotse_cuts_match_the_manifest(corpus):
    from lhotse import CutSet

    cuts = CutSet.from_file(corpus.dev_cuts)
    entries = _manifest(corpus.dev_manifest)
    assert len(cuts) == len(entries)
    for cut, e in zip(cuts, entries):
        assert cut.supervisions[0].text == e["text"]
        assert abs(cut.duration - e["duration"]) < 1e-3
        assert cut.load_audio().shape[-1] == round(e["duration"] * 16000)


def test_reuse_mismatch_and_determinism(corpus, tmp_path):
    stamps = {f: f.stat().st_mtime_ns for f in corpus.root.rglob("*") if f.is_file()}
    again = build_corpus(corpus.root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=0, vocab_size=64)
    assert again == corpus
    assert {f: f.stat().st_mtime_ns for f in corpus.root.rglob("*") if f.is_file()} == stamps, "reuse rewrote files"

    with pytest.raises(ValueError, match=r"other parameters \(seed: 0 there, 1 asked\)"):
        build_corpus(corpus.root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=1, vocab_size=64)

    twin = build_corpus(tmp_path / "twin", hours=0.005, dev_hours=0.002, test_hours=0.002, seed=0, vocab_size=32)
    first = [(e["text"], e["voice"]) for e in _manifest(twin.train_manifest)]
    # Same seed, same texts and voices (a second directory, built from scratch).
    other = build_corpus(tmp_path / "other", hours=0.005, dev_hours=0.002, test_hours=0.002, seed=0, vocab_size=32)
    assert [(e["text"], e["voice"]) for e in _manifest(other.train_manifest)] == first
    assert not list(tmp_path.glob(".*tmp*")), "temporary build directories left behind"


def test_dev_voices_give_dev_speakers_of_its_own(tmp_path):
    shared, held = split_voices(random.Random(0)), split_voices(random.Random(0), dev_voices=10)
    assert shared["dev"] == [] and len(held["dev"]) == 10
    assert held["test"] == shared["test"], "dev_voices changed the test split's speakers"
    assert set(held["dev"]) | set(held["train"]) == set(shared["train"])
    assert not set(held["dev"]) & set(held["train"])
    # A real corpus draws from that split, with derived voices too: a speaker derived from a training variant must
    # not reach dev either.
    corpus = build_corpus(
        tmp_path / "held",
        hours=0.01,
        dev_hours=0.005,
        test_hours=0.003,
        vocab_size=32,
        num_workers=1,
        derived_voices=1,
        dev_voices=10,
    )
    train, dev, test = (
        {e["voice"].split("+", 1)[1] for e in _manifest(m)}
        for m in (corpus.train_manifest, corpus.dev_manifest, corpus.test_manifest)
    )
    assert dev <= set(held["dev"]) and test <= set(held["test"])
    # A derived voice is named BASE_dK, spaces in BASE as dashes (nemo_codert.data.voices).
    assert {v.rsplit("_d", 1)[0].replace("-", " ") if "_d" in v else v for v in train} <= set(held["train"])
    assert any("_d" in v for v in train), "no derived voice drawn"
    assert json.loads((corpus.root / "corpus.json").read_text())["dev_voices"] == 10
    with pytest.raises(ValueError, match=r"dev_voices: 90 asked, but of eSpeak's \d+ variants \d+ are test's"):
        build_corpus(tmp_path / "too_many", hours=0.01, dev_hours=0.005, test_hours=0.003, dev_voices=90)
    assert not (tmp_path / "too_many").exists() and not list(tmp_path.glob(".*tmp*"))


# ------------------------------------------------------------------------------------------------ degradation


def test_reverberation_and_noise_do_what_they_say():
    from nemo_codert.data.augment import add_noise, coloured_noise, reverberate

    rng = np.random.default_rng(0)
    speech = (np.sin(np.arange(16000) * 0.05) * 0.5).astype(np.float32)
    for snr in (0.0, 10.0, 20.0):
        noisy = add_noise(speech, snr, "pink", np.random.default_rng(1))
        measured = 10 * np.log10(np.mean(speech**2) / np.mean((noisy - speech) ** 2))
        assert abs(measured - snr) < 0.01
    wet = reverberate(speech, 0.6, 16000, rng)
    assert wet.shape == speech.shape and abs(np.abs(wet).max() - np.abs(speech).max()) < 1e-6
    assert not np.allclose(wet, speech)
    # Longer RT60, more energy after the direct sound: the later half of a click's response holds more.
    click = np.zeros(16000, np.float32)
    click[0] = 1.0
    tails = [np.sum(reverberate(click, rt, 16000, np.random.default_rng(2))[4000:] ** 2) for rt in (0.2, 0.8)]
    assert tails[1] > 10 * tails[0]

    # Colour: brown noise puts far more power below 500 Hz than white noise does.
    def low_share(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[: len(power) * 500 // 8000].sum() / power.sum()

    assert low_share(coloured_noise(16000, "brown", rng)) > 0.9 > 0.2 > low_share(coloured_noise(16000, "white", rng))
    with pytest.raises(ValueError, match="noise colour 'blue'"):
        coloured_noise(10, "blue", rng)


def test_degraded_corpus_is_seeded_and_recorded(tmp_path):
    from nemo_codert.data.augment import Augmentation

    aug = Augmentation(reverb_prob=0.5, noise_prob=1.0, snr_db=(5.0, 5.0))
    kwargs = dict(hours=0.004, dev_hours=0.002, test_hours=0.002, seed=0, vocab_size=32)
    a = build_corpus(tmp_path / "a", augment=aug, **kwargs)
    b = build_corpus(tmp_path / "b", augment=aug, **kwargs)
    clean = build_corpus(tmp_path / "clean", **kwargs)
    entries = _manifest(a.train_manifest)
    assert all(e["snr_db"] == 5.0 and e["noise"] in ("white", "pink", "brown") for e in entries)
    assert {e["rt60"] is None for e in entries} == {True, False}  # some reverberated, some not
    for ea, eb, ec in zip(entries, _manifest(b.train_manifest), _manifest(clean.train_manifest)):
        audio_a, _ = sf.read(ea["audio_filepath"], dtype="float32")
        audio_b, _ = sf.read(eb["audio_filepath"], dtype="float32")
        audio_c, _ = sf.read(ec["audio_filepath"], dtype="float32")
        assert np.array_equal(audio_a, audio_b), "same seed, different audio"
        assert ea["text"] == ec["text"] and ea["voice"] == ec["voice"]  # degradation draws leave the text alone
        assert not np.allclose(audio_a, audio_c, atol=1e-3)
    with pytest.raises(ValueError, match="augment: None there"):
        build_corpus(tmp_path / "clean", augment=aug, **kwargs)
    with pytest.raises(ValueError, match="augment.noise_prob must lie in"):
        Augmentation(noise_prob=1.5)
