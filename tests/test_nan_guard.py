"""Faults in training: a NaN batch is dropped and does not poison the weights or the BatchNorm statistics."""

from __future__ import annotations

import logging as pylogging

import numpy as np
import soundfile
import torch

from nemo_codert.data.manifest import check_manifest

from helpers.factories import make_trainer, tiny_config, write_manifest


def test_nan_batch_does_not_poison_the_model(good, corpus, tmp_path, caplog):
    """A real NaN-filled audio file in training: that batch is dropped, weights and BatchNorm stats stay finite."""
    import lightning.pytorch as pl

    from nemo_codert.models import CodertRNNTBPEModel

    audio, sr = soundfile.read(good[0]["audio_filepath"], dtype="float32")
    audio[len(audio) // 3 :] = np.nan
    poisoned = tmp_path / "nan.wav"
    soundfile.write(poisoned, audio, sr, subtype="FLOAT")
    items = [{**good[0], "audio_filepath": str(poisoned)}] + good[1:8]  # 2 batches of 4, the NaN in the first
    manifest = write_manifest(tmp_path / "train.json", items)
    cfg = tiny_config(
        corpus, **{"train_ds.manifest_filepath": str(manifest), "train_ds.shuffle": False, "skip_nan_grad": True}
    )
    assert check_manifest(manifest, tmp_path).path == manifest  # a NaN sample is not a header problem: it trains

    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=4))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    model._trainer.callbacks.append(Record())
    with caplog.at_level(pylogging.WARNING):
        model._trainer.fit(model)
    assert model._trainer.global_step == 4, "training stopped"
    assert [np.isfinite(x) for x in losses] == [False, True, False, True]  # the NaN batch comes back each epoch
    assert "non-finite training loss" in caplog.text
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{name} was poisoned"
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert any(k.startswith("student_encoder.") for k in moved), "the good batches did not train the student"
