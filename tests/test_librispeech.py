"""LibriSpeech preparation (``examples/prepare_librispeech.py``, lhotse's recipe underneath) on a LibriSpeech-shaped
tree made from the eSpeak test corpus (``nemo_codert.data.librispeech_like``: FLAC audio, upper-case transcripts,
several speakers and chapters, two parts); then a few training steps from its output through NeMo's lhotse
dataloader."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from nemo_codert.data.librispeech import LibriSpeechError, prepare_librispeech
from nemo_codert.data.librispeech_like import PARTS

from helpers.factories import REPO, lhotse_train_ds, make_trainer, manifest_lines, tiny_config


def _script():
    spec = importlib.util.spec_from_file_location("prepare_librispeech", REPO / "examples" / "prepare_librispeech.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepared_librispeech_trains_through_nemos_lhotse_dataloader(corpus, librispeech_tree, tmp_path, capsys):
    from lhotse import CutSet

    from nemo_codert.models import CodertRNNTBPEModel

    root, texts = librispeech_tree
    out = tmp_path / "prepared"
    assert _script().main(["--corpus-dir", str(root), "--out", str(out), "--vocab-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "++model.train_ds.use_lhotse=true" in printed and "tokenizer_spe_bpe_v64" in printed
    # No test part prepared: null, where the config's own ${data.dir} path would not resolve after data=null.
    assert "++model.test_ds.manifest_filepath=null" in printed and "validation_ds.manifest_filepath=/" in printed

    seen = {}
    for part in PARTS:
        manifest = manifest_lines(out / "manifests" / f"{part}.json")
        cuts = CutSet.from_jsonl_lazy(out / "cuts" / f"{part}.jsonl.gz")  # lazy: read as it is iterated
        assert [c.recording_id for c in cuts] == [Path(e["audio_filepath"]).stem for e in manifest]
        for entry in manifest:
            utterance = Path(entry["audio_filepath"]).stem
            assert entry["audio_filepath"].endswith(".flac") and Path(entry["audio_filepath"]).is_file()
            assert entry["text"] == texts[utterance]  # the recipe's lower-casing: NeMo's LibriSpeech convention
            seen[utterance] = part
    assert set(seen) == set(texts)
    speakers = {u.split("-")[0] for u, p in seen.items() if p == "train-clean-5"}
    assert len(speakers) > 1 and len({u.rsplit("-", 1)[0] for u in seen}) > len(speakers)
    tokenizer = out / "tokenizer_spe_bpe_v64"
    assert {"tokenizer.model", "tokenizer.vocab", "vocab.txt"} <= {p.name for p in tokenizer.iterdir()}

    overrides = lhotse_train_ds(out / "cuts" / "train-clean-5.jsonl.gz")
    overrides |= {
        "tokenizer.dir": str(tokenizer),
        "validation_ds.manifest_filepath": str(out / "manifests/dev-clean-2.json"),
    }
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **overrides), trainer=make_trainer(max_steps=3))
    assert model.tokenizer.vocab_size == 64
    before = [p.detach().clone() for p in model.student_encoder.parameters()]
    model._trainer.fit(model)
    assert model._trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.student_encoder.parameters()))
    assert torch.isfinite(model._trainer.callback_metrics["train_loss"])

    # Prepared once: a second run reuses every file (nothing rewritten).
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    prepare_librispeech(root, out, vocab_size=64)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # lhotse's recipe writes its cache in place: a file a killed run left truncated is made again, not read as done.
    cached = out / "lhotse" / "librispeech_recordings_train-clean-5.jsonl.gz"
    whole = gzip.decompress(cached.read_bytes())
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    prepare_librispeech(root, out, vocab_size=64)
    assert gzip.decompress(cached.read_bytes()) == whole


def test_train_parts_as_lhotse_shar_train_through_nemos_shar_reader(corpus, librispeech_tree, tmp_path, capsys):
    from lhotse import CutSet

    from nemo_codert.models import CodertRNNTBPEModel

    root, texts = librispeech_tree
    out = tmp_path / "prepared"
    argv = ["--corpus-dir", str(root), "--out", str(out), "--vocab-size", "64", "--shar-shard-size", "8"]
    assert _script().main(argv) == 0
    shar = out / "shar" / "train-clean-5"
    printed = capsys.readouterr().out
    assert f"++model.train_ds.shar_path={shar}" in printed and "++trainer.limit_train_batches=" in printed
    assert "++model.train_ds.concurrent_bucketing=false" in printed
    assert not (out / "shar" / "dev-clean-2").exists()  # only the training parts are sharded
    cuts = list(CutSet.from_jsonl_lazy(out / "cuts" / "train-clean-5.jsonl.gz"))
    tars = sorted(shar.glob("recording.*.tar"))
    assert len(tars) == -(-len(cuts) // 8) and len(sorted(shar.glob("cuts.*.jsonl.gz"))) == len(tars)
    # The audio travels inside the shards: each cut's samples equal the FLAC file's.
    from_shar = {c.id: c for c in CutSet.from_shar(in_dir=shar)}
    assert set(from_shar) == {c.id for c in cuts}
    first = cuts[0]
    np.testing.assert_allclose(from_shar[first.id].load_audio(), first.load_audio(), atol=1e-4)

    overrides = lhotse_train_ds(None)
    overrides |= {
        "train_ds.cuts_path": None,
        "train_ds.shar_path": str(shar),
        "train_ds.concurrent_bucketing": False,  # as printed: else lhotse's producer thread outlives training
        "tokenizer.dir": str(out / "tokenizer_spe_bpe_v64"),
        "validation_ds.manifest_filepath": str(out / "manifests/dev-clean-2.json"),
    }
    torch.manual_seed(0)
    # An infinite train set: NeMo needs the batches of a (pseudo-)epoch as an int, as the script prints.
    trainer = make_trainer(max_steps=3, limit_train_batches=2)
    model = CodertRNNTBPEModel(cfg=tiny_config(corpus, **overrides), trainer=trainer)
    before = [p.detach().clone() for p in model.student_encoder.parameters()]
    trainer.fit(model)
    assert trainer.global_step == 3  # across two pseudo-epochs
    assert any(not torch.equal(a, b) for a, b in zip(before, model.student_encoder.parameters()))


def _one_chapter(root: Path) -> Path:
    """A minimal tree: one part, one speaker, one chapter with one utterance."""
    chapter = root / "train-clean-5" / "19" / "198"
    chapter.mkdir(parents=True)
    sf.write(chapter / "19-198-0000.flac", torch.zeros(1600).numpy(), 16000, format="FLAC")
    (chapter / "19-198.trans.txt").write_text("19-198-0000 A WORD\n")
    return chapter


def test_not_a_librispeech_tree_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "wavs").mkdir()
    assert _script().main(["--corpus-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: not a LibriSpeech tree" in err and "wavs" in err and "train-clean-100" in err
    with pytest.raises(LibriSpeechError, match="not a directory"):
        prepare_librispeech(tmp_path / "absent", tmp_path / "out")


def test_a_chapter_without_its_transcript_is_one_clear_error(tmp_path):
    chapter = _one_chapter(tmp_path)
    (chapter / "19-198.trans.txt").unlink()
    with pytest.raises(LibriSpeechError, match=r"19-198\.trans\.txt: missing transcript file .* \(1 \.flac files\)"):
        prepare_librispeech(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_audio_named_in_a_transcript_but_absent_is_one_clear_error(tmp_path):
    chapter = _one_chapter(tmp_path)
    with open(chapter / "19-198.trans.txt", "a") as f:
        f.write("19-198-0001 ANOTHER WORD\n")
    with pytest.raises(LibriSpeechError, match=r"trans\.txt:2: names 19-198-0001, but .*19-198-0001\.flac does not"):
        prepare_librispeech(tmp_path, tmp_path / "out")


def test_parts_must_exist_and_include_a_training_part(tmp_path):
    _one_chapter(tmp_path)
    with pytest.raises(LibriSpeechError, match=r"part\(s\) dev-clean not found \(present: train-clean-5\)"):
        prepare_librispeech(tmp_path, tmp_path / "out", parts=["dev-clean"])
    shutil.move(str(tmp_path / "train-clean-5"), str(tmp_path / "dev-clean"))
    with pytest.raises(LibriSpeechError, match="no train-\\* part to train the tokenizer on"):
        prepare_librispeech(tmp_path, tmp_path / "out")
