"""Shared fixtures: one tiny real corpus (eSpeak NG audio, NeMo manifests, BPE tokenizer) per test session, a second
tokenizer, and real utterances of that corpus. Plain helpers (tiny configs, trainers) are in helpers/factories.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.factories import manifest_lines


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from nemo_codert.data.synth import build_corpus

    root = tmp_path_factory.mktemp("corpus") / "synth"
    return build_corpus(root, hours=0.03, dev_hours=0.005, test_hours=0.005, seed=0, vocab_size=64)


@pytest.fixture(scope="session")
def other_tokenizer(corpus, tmp_path_factory) -> Path:
    """A second BPE tokenizer (48 tokens) of the same text, in NeMo's tokenizer-dir layout."""
    import json

    import sentencepiece as spm

    out = tmp_path_factory.mktemp("other_tokenizer")
    texts = [json.loads(line)["text"] for line in corpus.train_manifest.read_text().splitlines()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(out / "tokenizer"),
        vocab_size=48,
        model_type="bpe",
        character_coverage=1.0,
    )
    vocab = [line.split("\t")[0] for line in (out / "tokenizer.vocab").read_text().splitlines()]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out


@pytest.fixture()
def good(corpus):
    """Ten real utterances of the test corpus, with absolute audio paths."""
    items = manifest_lines(corpus.train_manifest)[:10]
    for item in items:
        audio = Path(item["audio_filepath"])
        item["audio_filepath"] = str(audio if audio.is_absolute() else corpus.train_manifest.parent / audio)
    return items


@pytest.fixture(scope="session")
def librispeech_tree(corpus, tmp_path_factory):
    """(root, {utterance id: text}): the corpus as a LibriSpeech tree (``nemo_codert.data.librispeech_like``)."""
    from nemo_codert.data.librispeech_like import write_librispeech_like

    root = tmp_path_factory.mktemp("librispeech")
    return root, write_librispeech_like(corpus.root, root)


@pytest.fixture(scope="session")
def prepared_librispeech(librispeech_tree, tmp_path_factory):
    """That tree through ``nemo_codert.data.librispeech.prepare_librispeech`` (a 64-piece tokenizer)."""
    from nemo_codert.data.librispeech import prepare_librispeech

    return prepare_librispeech(librispeech_tree[0], tmp_path_factory.mktemp("prepared") / "librispeech", vocab_size=64)
