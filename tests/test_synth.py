"""The offline corpus: real eSpeak NG audio, manifests, lhotse cuts and a tokenizer NeMo loads."""

import json
import time

import numpy as np
import pytest
import soundfile as sf

from nemo_codert.data.synth import build_corpus


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
    started = time.time()
    again = build_corpus(corpus.root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=0, vocab_size=64)
    assert again == corpus and time.time() - started < 1.0

    with pytest.raises(ValueError, match=r"other parameters \(seed: 0 there, 1 asked\)"):
        build_corpus(corpus.root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=1, vocab_size=64)

    twin = build_corpus(tmp_path / "twin", hours=0.005, dev_hours=0.002, test_hours=0.002, seed=0, vocab_size=32)
    first = [(e["text"], e["voice"]) for e in _manifest(twin.train_manifest)]
    # Same seed, same texts and voices (a second directory, built from scratch).
    other = build_corpus(tmp_path / "other", hours=0.005, dev_hours=0.002, test_hours=0.002, seed=0, vocab_size=32)
    assert [(e["text"], e["voice"]) for e in _manifest(other.train_manifest)] == first
    assert not list(tmp_path.glob(".*tmp*")), "temporary build directories left behind"
