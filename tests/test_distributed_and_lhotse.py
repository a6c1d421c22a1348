"""Other ways to train: Lightning DDP over 2 CPU processes, and NeMo's lhotse dataloader."""

from __future__ import annotations

import pytest
import torch

from nemo_codert.data.manifest import check_model_data

from helpers.factories import lhotse_train_ds, make_trainer, tiny_config


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(corpus, tmp_path):
    """Lightning DDP, 2 CPU processes (gloo): gradients of both RNN-T losses and KD are all-reduced, so after a few
    steps on different data both ranks hold the same weights; validation metrics are reduced over both ranks."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from helpers.factories import REPO

    cfg = tiny_config(corpus)
    OmegaConf.save(cfg, tmp_path / "model.yaml")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "ddp_train.py"), str(tmp_path / "model.yaml"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", map_location="cpu", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # Each rank saw its own shard: the per-rank losses differ...
    assert ranks[0]["losses"] != ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    # ...yet every parameter is identical afterwards (teacher, student, shared decoder and joint alike).
    for name, value in ranks[0]["state"].items():
        other = ranks[1]["state"][name]
        if "running_" in name or "num_batches_tracked" in name:
            continue  # BatchNorm statistics are per rank by design (no SyncBatchNorm): they are not parameters
        assert torch.equal(value, other), f"{name} differs between ranks"
    assert any(k.startswith("student_encoder.") for k in ranks[0]["state"])
    # Validation metrics are synchronised (NeMo logs them with sync_dist): both ranks report the same values,
    # though each validated its own shard (the losses are continuous: unsynchronised, they would differ).
    for key in ("val_wer", "val_wer_teacher", "val_loss", "val_loss_teacher", "val_kd"):
        assert ranks[0]["metrics"][key] == ranks[1]["metrics"][key]


def test_lhotse_dataloader_with_duration_batching_and_buckets_trains(corpus):
    """`use_lhotse: true` (NeMo's lhotse dataloader): the corpus's CutSet, duration-based batches, 2 buckets."""
    from nemo_codert.models import CodertRNNTBPEModel

    cfg = tiny_config(corpus, **lhotse_train_ds(corpus.train_cuts))
    assert check_model_data(cfg, corpus.root / "unused") == []  # lhotse data is lhotse's to read
    torch.manual_seed(0)
    model = CodertRNNTBPEModel(cfg=cfg, trainer=make_trainer(max_steps=3, limit_val_batches=0))
    batch = next(iter(model._train_dl))
    signal, signal_len, transcript, transcript_len = batch
    assert signal_len.float().sum() / 16000 <= 12.0 + 1e-6  # a duration budget, not a count
    student_before = [p.detach().clone() for p in model.student_encoder.parameters()]
    model._trainer.fit(model)
    assert model._trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(student_before, model.student_encoder.parameters()))
