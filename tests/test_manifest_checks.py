"""Manifests checked before training: a clean one is used as it is, bad utterances are skipped and logged (up to a
limit), a broken line or a wrong dataset config is one clear error, and the model config gets the filtered manifest."""

from __future__ import annotations

import logging as pylogging

import numpy as np
import pytest
import soundfile

from nemo_codert.data.manifest import (
    ManifestError,
    check_dataset_config,
    check_manifest,
    check_model_data,
    checked_manifest_name,
)

from helpers.factories import manifest_lines, tiny_config, write_manifest


def test_clean_manifest_is_used_as_it_is(corpus, tmp_path):
    report = check_manifest(corpus.train_manifest, tmp_path, corpus.tokenizer_dir)
    assert report.path == corpus.train_manifest and not report.skipped
    assert report.kept == len(manifest_lines(corpus.train_manifest))
    assert not list(tmp_path.iterdir())


def test_bad_utterances_are_skipped_and_logged(good, corpus, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    bad = [
        {**good[0], "audio_filepath": str(tmp_path / "missing.wav")},
        {**good[1], "audio_filepath": str(corrupt)},
        {**good[2], "audio_filepath": str(empty)},
        {**good[3], "text": "  "},
        {**good[4], "text": "price in € and ¥"},
    ]
    # 5 bad lines in 45: 11 %, so allow up to 20 % here.
    items = bad + good * 4
    manifest = write_manifest(tmp_path / "train_manifest.json", items)
    with caplog.at_level(pylogging.WARNING):
        report = check_manifest(manifest, tmp_path / "out", corpus.tokenizer_dir, max_skipped_fraction=0.2)
    reasons = dict(report.skipped)
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "does not exist" in reasons[1] and "missing.wav" in reasons[1]
    assert "cannot be read" in reasons[2] and "corrupt.wav" in reasons[2]
    assert "0 s" in reasons[3]
    assert reasons[4] == "empty transcript"
    assert "cannot encode" in reasons[5] and "€" in reasons[5]
    assert report.path == tmp_path / "out" / checked_manifest_name(manifest)
    assert report.path.name.startswith("train_manifest-") and report.path.name.endswith(".checked.json")
    kept = manifest_lines(report.path)
    assert [k["audio_filepath"] for k in kept] == [g["audio_filepath"] for g in good * 4]
    assert "line 2: skipping utterance" in caplog.text


def test_too_many_bad_utterances_stop_the_run(good, tmp_path):
    items = [{**g, "audio_filepath": str(tmp_path / f"gone{i}.wav")} for i, g in enumerate(good[:2])] + good[2:]
    manifest = write_manifest(tmp_path / "m.json", items)
    with pytest.raises(ManifestError, match=r"2 of 10 utterances are unusable .*max_skipped_fraction 10%"):
        check_manifest(manifest, tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"audio_filepath": "a.wav", "text": "x", "duration": 1.0', r"line 2: not JSON"),
        ('["a.wav", "x"]', r"line 2: a manifest line must be a JSON object, got list"),
        ('{"text": "x", "duration": 1.0}', r"line 2: missing field 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "duration": 1.0}', r"line 2: missing field 'text'"),
        ('{"audio_filepath": "a.wav", "text": "x"}', r"line 2: missing field 'duration'"),
        (
            '{"audio_filepath": "a.wav", "text": "x", "duration": "long"}',
            r"line 2: field 'duration' has the wrong type",
        ),
    ],
)
def test_broken_manifest_line_is_one_clear_error(good, tmp_path, line, message):
    manifest = write_manifest(tmp_path / "m.json", [good[0], line, good[1]])
    with pytest.raises(ManifestError, match=f"manifest {tmp_path / 'm.json'}, {message}"):
        check_manifest(manifest, tmp_path)


def test_dataset_config_errors_name_the_field(corpus, tmp_path):
    from omegaconf import OmegaConf

    with pytest.raises(ManifestError, match=r"model.train_ds.manifest_filepath: manifest .*nope.json: no such file"):
        check_dataset_config(
            OmegaConf.create({"manifest_filepath": str(tmp_path / "nope.json")}), "model.train_ds", tmp_path
        )
    lhotse_cfg = OmegaConf.create({"use_lhotse": True, "cuts_path": str(tmp_path / "cuts.jsonl.gz")})
    with pytest.raises(ManifestError, match=r"model.train_ds.cuts_path: .*cuts.jsonl.gz does not exist"):
        check_dataset_config(lhotse_cfg, "model.train_ds", tmp_path)
    # An existing cuts file is lhotse's to read: nothing to rewrite.
    assert (
        check_dataset_config(OmegaConf.create({"cuts_path": str(corpus.train_cuts)}), "model.train_ds", tmp_path)
        is None
    )


def test_model_config_gets_the_filtered_manifest(good, corpus, tmp_path):
    items = [{**good[0], "audio_filepath": str(tmp_path / "missing.wav")}] + good * 2  # 1 in 21: under 10 %
    cfg = tiny_config(corpus, **{"train_ds.manifest_filepath": str(write_manifest(tmp_path / "train.json", items))})
    assert check_model_data(cfg, tmp_path / "checked") == ["train_ds"]
    assert cfg.train_ds.manifest_filepath == str(tmp_path / "checked" / checked_manifest_name(tmp_path / "train.json"))
    assert cfg.validation_ds.manifest_filepath == str(corpus.dev_manifest)  # clean: untouched


def test_filtered_copies_of_manifests_with_one_name_do_not_overwrite_each_other(good, tmp_path):
    """Every dataset's filtered copy goes to one folder: a/manifest.json and b/manifest.json keep their own."""
    copies = []
    for part, kept in (("a", good[:5]), ("b", good[5:])):
        (tmp_path / part).mkdir()
        items = [{**good[0], "audio_filepath": str(tmp_path / "missing.wav")}] + kept * 2
        report = check_manifest(write_manifest(tmp_path / part / "manifest.json", items), tmp_path / "checked")
        copies.append((report.path, [k["audio_filepath"] for k in kept * 2]))
    assert copies[0][0] != copies[1][0]
    for path, expected in copies:
        assert [k["audio_filepath"] for k in manifest_lines(path)] == expected
